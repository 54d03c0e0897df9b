"""The raw-format readers: every format parses to the interactions that were written, in the
documented order, and a malformed file is reported with its name and the offending line."""

from __future__ import annotations

import gzip
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest

from semtail.datasets.formats import FORMATS, Anomalies, RawFormatError, read_interactions
from synthetic_data import SOURCE_OPTIONS, add_bytes, netflix_movie_texts, synthetic_for_format, write_netflix_tar


def rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as plain Python values: ids as int or str, ratings as float."""
    users = frame["user"].astype(object).tolist()
    items = frame["item"].astype(object).tolist()
    return list(zip(users, items, frame["rating"].astype(float).tolist()))


def expected_order(raw_format: str, frame: pd.DataFrame) -> pd.DataFrame:
    # Netflix rows come ordered by movie id, each movie's rows in their listed order.
    return frame.sort_values("item", kind="stable") if raw_format.startswith("netflix") else frame


@pytest.mark.parametrize("raw_format", FORMATS)
def test_each_format_reads_back_what_was_written(raw_format, raw_files):
    frame = synthetic_for_format(raw_format, seed=3)
    got = read_interactions(raw_format, raw_files(raw_format, frame), SOURCE_OPTIONS.get(raw_format))
    assert list(got.columns) == ["user", "item", "rating"]
    assert rows(got) == rows(expected_order(raw_format, frame))
    assert got["rating"].dtype == np.float32 and not got["rating"].isna().any()
    if raw_format in ("msd-triplets", "delimited"):
        assert all(isinstance(u, str) for u in got["user"].astype(object).head())
    else:
        assert np.issubdtype(got["user"].dtype, np.integer) and np.issubdtype(got["item"].dtype, np.integer)


def test_udata_and_recbole_inter_agree(raw_files):
    frame = synthetic_for_format("ml-100k", seed=4)
    udata = read_interactions("ml-100k", raw_files("ml-100k", frame))
    inter = read_interactions("recbole-inter", raw_files("recbole-inter", frame))
    pd.testing.assert_frame_equal(udata, inter)


def test_netflix_layouts_agree_whatever_the_member_order(raw_files, tmp_path):
    frame = synthetic_for_format("netflix-tar", seed=5)
    combined = read_interactions("netflix-combined", raw_files("netflix-combined", frame))
    from_tar = read_interactions("netflix-tar", raw_files("netflix-tar", frame))
    reversed_tar = write_netflix_tar(frame, tmp_path / "reversed.tar.gz", member_order="reversed")
    from_reversed = read_interactions("netflix-tar", [reversed_tar])
    pd.testing.assert_frame_equal(combined, from_tar)
    pd.testing.assert_frame_equal(combined, from_reversed)
    assert (np.diff(combined["item"].to_numpy()) >= 0).all()


def test_netflix_inner_training_set_tar_alone(tmp_path):
    frame = synthetic_for_format("netflix-tar", seed=6)
    texts = netflix_movie_texts(frame)
    path = tmp_path / "training_set.tar"
    with tarfile.open(path, "w") as archive:
        for movie in sorted(texts):
            add_bytes(archive, f"training_set/mv_{movie:07d}.txt", texts[movie].encode())
    got = read_interactions("netflix-tar", [path])
    assert rows(got) == rows(frame.sort_values("item", kind="stable"))


def test_netflix_combined_from_the_kaggle_zip(raw_files, tmp_path):
    frame = synthetic_for_format("netflix-combined", seed=7)
    files = raw_files("netflix-combined", frame)
    bundle = tmp_path / "archive.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in files:
            archive.write(path, f"archive/{path.name}")
        archive.writestr("archive/movie_titles.csv", "1,2003,A Title\n")
    assert rows(read_interactions("netflix-combined", [bundle])) == rows(frame.sort_values("item", kind="stable"))


def replace_line(path, number, text):
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    "raw_format, line, replacement, problem",
    [
        ("ml-20m", 1, "user,movie,rating,timestamp\n", "expected the header"),
        ("ml-20m", 7, "12,34,4.0\n", "expected 4 fields"),
        ("ml-20m", 9, "12,34,four,5\n", "bad rating value"),
        ("ml-20m", 9, "12,34,NA,5\n", "bad rating value"),
        ("ml-20m", 11, "12,,4.0,5\n", "bad item value"),
        ("ml-100k", 5, "196\t24\n", "expected 4 fields"),
        ("recbole-inter", 1, "user_id:token\titem_id:token\trating:float\n", "expected the header"),
        ("msd-triplets", 8, "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAKIMP12A8C130995\n", "expected 3 fields"),
        ("netflix-combined", 1, "1488844,3,2005-09-06\n", "expected a 'MovieID:' line first"),
        ("netflix-combined", 6, "1488844,3\n", "with an integer rating"),
        ("netflix-combined", 6, "1488844,4.5,2005-09-06\n", "with an integer rating"),
        ("netflix-combined", 6, "abc:\n", "expected 'MovieID:'"),
    ],
)
def test_malformed_line_is_named(raw_format, line, replacement, problem, raw_files):
    frame = synthetic_for_format(raw_format, seed=8)
    files = raw_files(raw_format, frame)
    replace_line(files[0], line, replacement)
    with pytest.raises(RawFormatError) as error:
        read_interactions(raw_format, files)
    message = str(error.value)
    assert str(files[0]) in message and f"line {line}" in message and problem in message


DELIMITED_FORMATS = ("ml-20m", "ml-100k", "recbole-inter", "msd-triplets")


def cut_points(line: bytes, separator: bytes) -> dict[str, int]:
    """Where to cut a last line (offsets into it): after each of its characters that leave a line
    that still parses, or one that does not."""
    return {
        "only the newline": len(line),
        "the last character": len(line) - 1,  # 1,3,5.0,1427784002 -> 1,3,5.0,142778400: still parses
        "after a separator": line.rindex(separator) + 1,
        "inside the first field": 2,
    }


@pytest.mark.parametrize("raw_format", DELIMITED_FORMATS)
def test_delimited_file_cut_in_its_last_line_looks_truncated(raw_format, raw_files):
    frame = synthetic_for_format(raw_format, seed=9)
    [path] = raw_files(raw_format, frame)
    text = path.read_bytes()
    last_start = text.rindex(b"\n", 0, len(text) - 1) + 1
    last_number = text.count(b"\n")  # every line ends with one, the last line too
    separator = b"," if raw_format == "ml-20m" else b"\t"
    for where, offset in cut_points(text[last_start:-1], separator).items():
        cut = text[: last_start + offset]
        path.write_bytes(cut)
        with pytest.raises(RawFormatError) as error:
            read_interactions(raw_format, [path])
        message = str(error.value)
        problem = "the file does not end with a newline, so it looks truncated"
        assert message.startswith(f"{path}, line {last_number}: {problem}"), where
        assert repr(cut[last_start:]) in message, where
    if raw_format != "msd-triplets":  # (its play counts here are one digit: the cut leaves an empty field)
        path.write_bytes(text[: len(text) - 2] + b"\n")  # the timestamp cut by a digit, then a newline: it parses
        assert len(read_interactions(raw_format, [path])) == len(frame)


def netflix_cut_points(line: bytes) -> dict[str, int]:
    """Cuts of a 'CustomerID,Rating,YYYY-MM-DD' line that leave an incomplete line."""
    first, second = line.index(b","), line.rindex(b",")
    return {
        "in the day": len(line) - 1,  # 55508,5,2005-05-1
        "in the month": len(line) - 4,
        "after the rating": second,  # 55508,5
        "after the first comma": first + 1,
        "in the customer id": 2,
    }


def test_netflix_combined_file_cut_in_its_last_line_looks_truncated(raw_files):
    frame = synthetic_for_format("netflix-combined", seed=9)
    files = raw_files("netflix-combined", frame)
    path = files[-1]
    text = path.read_bytes()
    last_start = text.rindex(b"\n", 0, len(text) - 1) + 1
    last_number = text.count(b"\n")
    cuts = {where: text[: last_start + offset] for where, offset in netflix_cut_points(text[last_start:-1]).items()}
    cuts["a movie line without ratings"] = text + b"99999:"
    for where, cut in cuts.items():
        path.write_bytes(cut)
        number = last_number + 1 if where == "a movie line without ratings" else last_number
        with pytest.raises(RawFormatError) as error:
            read_interactions("netflix-combined", files)
        last = cut[cut.rindex(b"\n") + 1 :]
        assert str(error.value) == (
            f"{path}, line {number}: the file does not end with a newline and its last line {last!r} is not a "
            "complete 'CustomerID,Rating,YYYY-MM-DD' line, so it looks truncated"
        ), where
    path.write_bytes(text[:-1])  # without the final newline but complete: read as it is
    assert rows(read_interactions("netflix-combined", files)) == rows(frame.sort_values("item", kind="stable"))


def test_netflix_movie_file_cut_in_its_last_line_looks_truncated(tmp_path):
    frame = synthetic_for_format("netflix-tar", seed=9)
    texts = {movie: text.encode() for movie, text in netflix_movie_texts(frame).items()}
    movie = sorted(texts)[len(texts) // 2]
    last_start = texts[movie].rindex(b"\n", 0, len(texts[movie]) - 1) + 1
    path = tmp_path / "training_set.tar"
    for _where, offset in netflix_cut_points(texts[movie][last_start:-1]).items():
        with tarfile.open(path, "w") as archive:
            for number in sorted(texts):
                data = texts[number][: last_start + offset] if number == movie else texts[number]
                add_bytes(archive, f"training_set/mv_{number:07d}.txt", data)
        member = f"training_set/mv_{movie:07d}.txt"
        with pytest.raises(RawFormatError, match=rf"{path}:{member}, line \d+: .* so it looks truncated"):
            read_interactions("netflix-tar", [path])


def test_truncated_netflix_archive(raw_files):
    frame = synthetic_for_format("netflix-tar", seed=10)
    [path] = raw_files("netflix-tar", frame)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RawFormatError, match=rf"{path}: cannot be read, the archive is damaged or truncated"):
        read_interactions("netflix-tar", [path])


def test_netflix_archive_with_a_link_is_refused(tmp_path):
    path = tmp_path / "training_set.tar"
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "training_set/mv_0000001.txt", b"1:\n6,3,2005-01-01\n")
        add_bytes(archive, "training_set/mv_0000002.txt", None, symlink_to="/etc/passwd")
    with pytest.raises(RawFormatError, match=r"mv_0000002.txt: the archive holds a link"):
        read_interactions("netflix-tar", [path])


def test_netflix_movie_file_must_match_its_header(tmp_path):
    path = tmp_path / "training_set.tar"
    with tarfile.open(path, "w") as archive:
        add_bytes(archive, "training_set/mv_0000003.txt", b"4:\n6,3,2005-01-01\n")
    with pytest.raises(RawFormatError, match=r"mv_0000003.txt, line 1: expected '3:'"):
        read_interactions("netflix-tar", [path])


def test_netflix_movie_listed_twice_is_an_error(raw_files, tmp_path):
    frame = synthetic_for_format("netflix-combined", seed=11)
    files = raw_files("netflix-combined", frame)
    files[3].write_text(files[3].read_text() + files[0].read_text().split("\n", 1)[0] + "\n6,3,2005-01-01\n")
    with pytest.raises(RawFormatError, match=r"movie \d+ appears again"):
        read_interactions("netflix-combined", files)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "ratings.csv"
    empty.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(RawFormatError, match=rf"{empty}: no interactions"):
        read_interactions("ml-20m", [empty])
    with pytest.raises(RawFormatError, match=r"nowhere.csv: file not found"):
        read_interactions("ml-20m", [tmp_path / "nowhere.csv"])
    with pytest.raises(RawFormatError, match=r"unknown raw format 'ml-1m'"):
        read_interactions("ml-1m", [empty])


def test_netflix_reads_crlf_and_missing_final_newline(tmp_path):
    folder = tmp_path / "netflix"
    folder.mkdir()
    texts = ["3:\r\n10,4,2005-01-01\r\n11,5,2005-01-02\r\n", "4:\n12,1,2005-01-01", "5:\n", "6:\n10,2,2005-02-02\n"]
    for index, text in enumerate(texts):
        (folder / f"combined_data_{index + 1}.txt").write_text(text, newline="")
    got = read_interactions("netflix-combined", sorted(folder.iterdir()))
    assert rows(got) == [(10, 3, 4.0), (11, 3, 5.0), (12, 4, 1.0), (10, 6, 2.0)]


def test_gzip_is_not_mistaken_for_a_ratings_file(tmp_path):
    path = tmp_path / "ratings.csv"
    with gzip.open(path, "wt") as handle:
        handle.write("userId,movieId,rating,timestamp\n1,2,3.0,4\n")
    with pytest.raises(RawFormatError, match=rf"{path}, line 1: expected the header"):
        read_interactions("ml-20m", [path])


def test_string_ids_keep_their_text(tmp_path):
    path = tmp_path / "train_triplets.txt"
    path.write_text("b\tSOB\t3\na\tSOA\t1\nb\tSOA\t12\n")
    got = read_interactions("msd-triplets", [path])
    assert rows(got) == [("b", "SOB", 3.0), ("a", "SOA", 1.0), ("b", "SOA", 12.0)]
    assert isinstance(got["user"].dtype, pd.CategoricalDtype)


def test_netflix_combined_needs_all_four_files(raw_files):
    files = raw_files("netflix-combined", synthetic_for_format("netflix-combined", seed=12))
    for given in (files[:1], files[:3], [*files[:3], files[0].with_name("combined_data_5.txt")]):
        with pytest.raises(
            RawFormatError, match=r"netflix-combined reads all four files combined_data_1.txt, .*_4.txt"
        ):
            read_interactions("netflix-combined", given)


# ---------------------------------------------------------------------------------------- delimited


def delimited(tmp_path, text: str, **options) -> tuple[list, dict]:
    path = tmp_path / "mine.txt"
    path.write_text(text)
    return [path], {"format": "delimited", **options}


def test_delimited_by_position_without_header_or_rating(tmp_path):
    files, source = delimited(
        tmp_path,
        "2024-01-02\tb 7\tu10\n2024-01-03\ta\tu9\n2024-01-04\ta\tu10\n",
        sep="\t",
        header=False,
        columns={"user": 2, "item": 1, "timestamp": 0},
    )
    got = read_interactions("delimited", files, source)
    assert list(got.columns) == ["user", "item"]
    assert list(zip(got["user"].astype(object), got["item"].astype(object))) == [
        ("u10", "b 7"),
        ("u9", "a"),
        ("u10", "a"),
    ]


def test_delimited_quoted_fields_keep_the_separator(tmp_path):
    files, source = delimited(
        tmp_path,
        'who,what,score\n"Smith, J.",x,4\n"Doe, A.","y,z",5\n',
        sep=",",
        columns={"user": "who", "item": "what", "rating": "score"},
    )
    assert rows(read_interactions("delimited", files, source)) == [("Smith, J.", "x", 4.0), ("Doe, A.", "y,z", 5.0)]


@pytest.mark.parametrize(
    "text, options, problem",
    [
        (
            "u;i;r\n",
            {"columns": {"user": "u", "item": "product"}},
            "line 1: the header has no column 'product' (columns.item)",
        ),
        (
            "1;2\n3;4\n",
            {"header": False, "columns": {"user": 0, "item": 2}},
            "line 1: columns.item is position 2, but the line has 2 fields",
        ),
        (
            "u;i;r\na;b;5\nc;d\n",
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: expected 3 fields separated by ';', found 2",
        ),
        ("u;i;r\na;b;5\n;d;4\n", {"columns": {"user": "u", "item": "i", "rating": "r"}}, "line 3: bad user value"),
        (
            "u;i;r\na;b;5\nc;d;many\n",
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: bad rating value b'many'",
        ),
        (
            "u;i;r\na;b;5\nc;d",
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: expected 3 fields separated by ';', found 2: b'c;d' (truncated or malformed file?); it is the last "
            "line, and the file does not end with a newline, so it looks truncated",
        ),
        (
            "u;i;r\r\na;b;5\r\nc;d;",
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: bad rating value b'' in b'c;d;'; it is the last line, and the file does not end with a newline",
        ),
        (
            'u;i;r\nx;y;3\n"line1\nline2";b;5\nc;d;4\n',
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: the user id 'line1\\nline2' holds a line break; the split writes ids one a line",
        ),
        (
            'u;i;r\nx;y;3\nc;"a\r\nb";4\n',
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 3: the item id 'a\\r\\nb' holds a line break",
        ),
        (
            "u;i;r\nx;y;3\nc;d;4\nc;it\u2028em;4\n",
            {"columns": {"user": "u", "item": "i", "rating": "r"}},
            "line 4: the item id 'it\\u2028em' holds a line break",
        ),
        ("", {"columns": {"user": "customer", "item": "i"}}, "the file is empty"),
        ("", {"header": False, "columns": {"user": 0, "item": 1}}, "the file is empty"),
        ("\n\r\n", {"columns": {"user": "customer", "item": "i"}}, "the file is empty (blank lines only)"),
    ],
)
def test_delimited_bad_lines_are_named(tmp_path, text, options, problem):
    files, source = delimited(tmp_path, text, sep=";", **options)
    with pytest.raises(RawFormatError) as error:
        read_interactions("delimited", files, source)
    separator = ": " if problem.startswith("the file is empty") else ", "
    assert str(error.value).startswith(f"{files[0]}{separator}{problem}"), str(error.value)


def test_a_delimited_file_without_a_final_newline_is_read_whole(tmp_path):
    """Own data need not end with a newline (the HetRec Last.fm file: tab-separated, CRLF, none at
    the end): a last line that parses whole is read, blank lines counted as ever."""
    files, source = delimited(
        tmp_path, "", sep="\t", columns={"user": "userID", "item": "artistID", "rating": "weight"}
    )
    files[0].write_bytes(b"userID\tartistID\tweight\r\n2\t51\t13883\r\n\r\n2\t52\t11690\r\n3\t51\t228")
    anomalies = Anomalies()
    assert rows(read_interactions("delimited", files, source, anomalies)) == [
        ("2", "51", 13883.0),
        ("2", "52", 11690.0),
        ("3", "51", 228.0),
    ]
    assert anomalies.as_dict() == {"blank_lines": {"count": 1, "first": f"{files[0]}, line 3", "action": "skipped"}}


def test_an_empty_file_of_a_known_format_says_so(tmp_path):
    empty = tmp_path / "ratings.csv"
    empty.write_bytes(b"")
    with pytest.raises(RawFormatError, match=rf"^{empty}: the file is empty$"):
        read_interactions("ml-20m", [empty])


@pytest.mark.parametrize(
    "options, problem",
    [
        (
            {"sep": ";;", "columns": {"user": 0, "item": 1}},
            r"here\.sep: the delimited format needs one separator character",
        ),
        ({"sep": '"', "columns": {"user": 0, "item": 1}}, r"here\.sep: .* not a quote"),
        (
            {"sep": ";", "header": False, "columns": {"user": "who", "item": 1}},
            r"here\.columns\.user: 'who' is a column name, but header is false",
        ),
        ({"sep": ";", "columns": {"user": 0}}, r"here\.columns: needs user and item, .* missing \['item'\]"),
        ({"sep": ";", "columns": {"user": 0, "item": 1, "when": 2}}, r"here\.columns: .* unknown \['when'\]"),
        ({"sep": ";", "columns": {"user": 0, "item": 0}}, r"here\.columns: \['0'\] given for more than one"),
        ({"sep": ";", "columns": {"user": -1, "item": 0}}, r"here\.columns\.user: a position counts from 0, got -1"),
        ({"sep": ";", "header": "yes", "columns": {"user": 0, "item": 1}}, r"here\.header: must be true or false"),
    ],
)
def test_delimited_options_are_checked_by_name(options, problem):
    from semtail.datasets.formats import DelimitedOptions

    with pytest.raises(RawFormatError, match=problem):
        DelimitedOptions.from_source(options, "here")


# ---------------------------------------------------------------------------------------- anomalies


def test_blank_lines_and_non_finite_ratings_are_counted(raw_files):
    from semtail.datasets.formats import Anomalies

    frame = synthetic_for_format("ml-20m", seed=14)
    [path] = raw_files("ml-20m", frame)
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = "12,34,nan,5\n"  # line 6
    lines[9] = "12,35,inf,5\n"  # line 10
    lines[20:20] = ["\n", "\r\n"]  # lines 21 and 22
    path.write_text("".join(lines))
    anomalies = Anomalies()
    got = read_interactions("ml-20m", [path], anomalies=anomalies)
    kept = frame.drop(index=frame.index[[4, 8]])  # data lines 5 and 9, after the header
    assert rows(got) == rows(kept)
    found = anomalies.as_dict()
    assert found["blank_lines"] == {"count": 2, "first": f"{path}, line 21", "action": "skipped"}
    assert found["non_finite_ratings"]["count"] == 2 and found["non_finite_ratings"]["action"] == "dropped"
    assert found["non_finite_ratings"]["first"] == f"{path}, line 6"


def test_netflix_blank_lines_are_skipped_and_counted(tmp_path):
    from semtail.datasets.formats import Anomalies

    folder = tmp_path / "netflix"
    folder.mkdir()
    texts = ["\n3:\n10,4,2005-01-01\n\n11,7,2005-01-02\n", "4:\n12,1,2005-01-01\n\n\n", "5:\n", "6:\n10,0,2005-02-02\n"]
    for index, text in enumerate(texts):
        (folder / f"combined_data_{index + 1}.txt").write_text(text)
    anomalies = Anomalies()
    got = read_interactions("netflix-combined", sorted(folder.iterdir()), anomalies=anomalies)
    assert rows(got) == [(10, 3, 4.0), (11, 3, 7.0), (12, 4, 1.0), (10, 6, 0.0)]  # out of 1-5: kept here
    assert anomalies.as_dict()["blank_lines"] == {
        "count": 4,
        "first": f"{folder / 'combined_data_1.txt'}, line 1",
        "action": "skipped",
    }
