"""semtail.sgd.CosineAnnealedSGD against what it writes out: torch.optim.SGD(fused=True) stepped by
torch.optim.lr_scheduler.CosineAnnealingLR, side by side on the same gradients, bit for bit."""

import subprocess
import sys
from pathlib import Path

import torch

from semtail.sgd import CosineAnnealedSGD

ROOT = Path(__file__).resolve().parents[1]


def parameters(seed: int) -> list[torch.Tensor]:
    """U-like, adversary-like and threshold-like parameters."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(12, 12), (7, 5), (5,), ()]
    return [torch.randn(shape, generator=generator) for shape in shapes]


def groups(params: list[torch.Tensor]) -> list[dict]:
    return [
        {"params": [params[0]], "lr": 0.3, "momentum": 0.9, "weight_decay": 0.05},
        {"params": params[1:3], "lr": 0.01, "weight_decay": 0.2},  # momentum 0, as torch's group then has
        {"params": [params[3]], "lr": 0.002, "momentum": 0.0, "weight_decay": 0.0},
    ]


def set_gradients(params: list[torch.Tensor], step: int) -> None:
    generator = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    if step % 3 == 2:
        params[2].grad = None  # a parameter without a gradient in a step is left as it is


def test_steps_and_annealing_equal_torch_optim_bit_for_bit_through_a_resume():
    epochs, steps_per_epoch = 5, 3
    theirs, ours = parameters(0), parameters(0)
    torch_sgd = torch.optim.SGD(groups(theirs), lr=0.3, fused=True)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(torch_sgd, T_max=epochs)
    sgd = CosineAnnealedSGD(groups(ours), epochs=epochs)
    step = 0
    for epoch in range(epochs + 3):  # on past T_max, where the schedule's lr climbs again
        if epoch == 2:  # a checkpoint, and training resumed from it in a new optimizer
            saved = sgd.state_dict()
            resumed = [p.clone() for p in ours]
            sgd = CosineAnnealedSGD(groups(resumed), epochs=epochs)
            sgd.load_state_dict(saved)
            ours = resumed
        for _ in range(steps_per_epoch):
            set_gradients(theirs, step)
            set_gradients(ours, step)
            torch_sgd.step()
            sgd.step()
            step += 1
            for mine, reference in zip(ours, theirs, strict=True):
                assert torch.equal(mine, reference), f"epoch {epoch}, step {step}"
        torch_cosine.step()
        sgd.anneal()
        assert [g["lr"] for g in sgd.param_groups] == [g["lr"] for g in torch_sgd.param_groups], f"epoch {epoch}"
    assert sgd.param_groups[0]["lr"] > 0  # the schedule went past its end (lr 0 at T_max) and back up
    assert torch.equal(sgd.state[ours[0]]["momentum_buffer"], torch_sgd.state[theirs[0]]["momentum_buffer"])
    assert not any(sgd.state[p] for p in ours[1:])  # no momentum, no buffer


def test_a_training_job_does_not_import_torch_dynamo():
    """torch.optim imports torch._dynamo on first use (1.5 s of CPU): an SGD training, start to end,
    in a fresh interpreter, leaves it unimported."""
    program = """
import sys
from method_settings import settings
from semtail.models import posit
from semtail.models.base import TrainingRun
from semtail.models.synthetic import training_data
data = training_data(80, 20, 4, 20, seed=1)
posit.fit(data, settings(batch_size=16, epochs=2)["posit_mlp"], TrainingRun("toy", "posit", 0))
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'workflow_scripts'}:{ROOT / 'tests'}", "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
