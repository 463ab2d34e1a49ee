"""Benchmark reports (fmmforge.reports, `fmmforge report`): from a store seeded with synthetic records."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from helpers import SYNTHETIC_MACHINE as MACHINE
from helpers import record

from fmmforge.codegen.records import Record, add_record
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store
from fmmforge.reports import build_report, write_report
from fmmforge.reports.compare import compare
from fmmforge.reports.data import COLUMNS, assign_runs, load_records, parse_selector, select
from fmmforge.reports.numbers import format_value

SECTIONS = ["1. The device", "2. Speed-up", "3. Effective GFLOP/s", "4. Error against levels", "5. Memory",
            "6. The cost model", "7. The tuned choice", "8. Discovery"]


def seed(store: Store, records: list[Record]) -> None:
    for r in records:
        add_record(r, store)


def seeded(home: Path) -> Store:
    s = Store(home)
    times = iter(f"2026-12-01T10:{m:02d}:00+00:00" for m in range(60))
    seed(s, [record(a, L, n, when=next(times), kernel_s=0.001 * n / 512 * (1 - 0.05 * L), vendor_s=0.001 * n / 512)
             for n in (512, 1024) for a in ("strassen", "laderman") for L in (1, 2)])
    return s


@pytest.fixture
def store(tmp_path) -> Store:
    return seeded(tmp_path / "home")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Store, Path]:
    """One report of the seeded store, written once for the tests that only read it."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMMFORGE_HOME", str(root / "home"))
        s = seeded(root / "home")
        return s, write_report(s, root / "out").parent


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def test_report_has_every_section_and_the_files(written):
    out = written[1]
    index = out / "index.html"
    assert {p.name for p in out.iterdir()} == {"index.html", "report.md", "records.csv", "speedup.png",
                                               "gflops.png", "error.png", "memory.png"}
    html, md = index.read_text(), (out / "report.md").read_text()
    for title in SECTIONS:
        assert title in html and title in md
    assert "no cost model fitted for this device yet: run `fmmforge calibrate`" in md
    assert "run `fmmforge tune`" in md
    for png in ("speedup.png", "gflops.png", "error.png", "memory.png"):
        assert f"]({png})" in md
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_parses_and_references_nothing_external(written):
    parser = _Parsed()
    parser.feed((written[1] / "index.html").read_text())
    parser.close()
    assert parser.tags.count("img") == 4 and "table" in parser.tags
    assert parser.refs and all(ref.startswith("data:image/png;base64,") for ref in parser.refs)
    assert "<script" not in "".join(parser.tags) and "link" not in parser.tags


def test_every_csv_number_is_in_the_tables(written):
    out = written[1]
    csv = pd.read_csv(out / "records.csv")
    md = (out / "report.md").read_text()
    cells = {c.strip() for line in md.splitlines() if line.startswith("|") for c in line.strip("|").split("|")}
    for m, k, n in csv[["m", "k", "n"]].itertuples(index=False):  # M, K and N are shown as the size MxKxN
        assert f"{m}x{k}x{n}" in cells
    numeric = csv.select_dtypes("number").drop(columns=["m", "k", "n"])
    assert len(numeric.columns) >= 14
    for column in numeric.columns:
        for value in numeric[column]:
            assert format_value(column, value) in cells, (column, value)


def test_csv_round_trips_through_pandas(written):
    store, out = written
    written = load_records(store)
    read = pd.read_csv(out / "records.csv")
    assert list(read.columns) == list(COLUMNS)
    assert len(read) == len(written) == 8
    for column in COLUMNS:
        if written[column].dtype.kind in "fi":
            assert read[column].tolist() == pytest.approx(written[column].astype(float).tolist(), rel=0, abs=0)
        else:
            assert read[column].astype(str).tolist() == written[column].astype(str).tolist()


def test_terminal_tables_say_what_the_report_says(store, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FMMFORGE_HOME", str(store.home))
    code, out, err = cli("report", "-o", tmp_path / "out")
    assert code == 0, err
    assert f"report: {tmp_path / 'out' / 'index.html'}" in out
    md = (tmp_path / "out" / "report.md").read_text()
    for title in SECTIONS:
        assert title in out
    speedups = pd.read_csv(tmp_path / "out" / "records.csv")["speedup"]
    for value in speedups:
        text = format_value("speedup", value)
        assert text in out and text in md


def test_empty_store_writes_a_report_that_says_what_is_missing(cli, tmp_path):
    code, out, err = cli("report", "-o", tmp_path / "out")
    assert code == 0, err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "no benchmark records for cpu in the store yet: run `fmmforge bench" in md
    assert "no algorithms in the store yet" in md
    assert not list((tmp_path / "out").glob("*.png"))  # no empty plots
    assert "Traceback" not in out + err


def test_one_record_gives_a_report_with_plots(tmp_path):
    s = Store(tmp_path / "home")
    seed(s, [record(memory=False)])
    out = write_report(s, tmp_path / "out").parent
    md = (out / "report.md").read_text()
    assert (out / "speedup.png").exists()
    assert "peak extra memory was not measured: run `fmmforge bench --memory`" in md


def test_records_of_another_device_or_machine(tmp_path, cli, monkeypatch):
    s = Store(tmp_path / "home")
    seed(s, [record(device="cuda:0", machine="NVIDIA H200, 132 SMs, 139.8 GiB, compute 9.0")])
    monkeypatch.setenv("FMMFORGE_HOME", str(s.home))
    code, out, err = cli("report", "--device", "cpu", "-o", tmp_path / "out")
    assert code == 2, out
    assert "no records for device cpu in the store (it has records for cuda:0); pass --device cuda:0" in err
    assert not (tmp_path / "out").exists()
    code, out, err = cli("report", "-o", tmp_path / "out")  # the only device recorded
    assert code == 0, err
    assert "measured on another machine than this one" in (tmp_path / "out" / "report.md").read_text()


def test_several_devices_need_a_choice(tmp_path):
    s = Store(tmp_path / "home")
    seed(s, [record(), record(device="cuda:0", machine="GPU")])
    with pytest.raises(FmmforgeError, match="several devices"):
        build_report(s)
    assert "1 measurements on cuda:0" in build_report(s, device="cuda").subtitle


def test_filters_algos_and_since(store):
    report = build_report(store, algos=["laderman"], since="2026-12-01T10:05")
    assert set(report.records["algorithm"]) == {"laderman"}
    assert (report.records["created_at"] >= "2026-12-01T10:05").all()
    with pytest.raises(FmmforgeError, match="no records of winograd on cpu"):
        build_report(store, algos=["winograd"])
    with pytest.raises(FmmforgeError, match="give an earlier --since"):
        build_report(store, since="2027-01-01")
    with pytest.raises(FmmforgeError, match="cannot read --since"):
        build_report(store, since="yesterday")


def test_runs_split_on_repeats_gaps_and_versions():
    rs = [record(when="2026-12-01T10:00:00+00:00"), record(size=1024, when="2026-12-01T10:01:00+00:00"),
          record(when="2026-12-01T10:02:00+00:00"),  # the same plan and size again: a new run
          record(size=1024, when="2026-12-01T12:00:00+00:00"),  # two hours later
          record(size=2048, when="2026-12-01T12:01:00+00:00", version="0.2.0")]
    assert assign_runs(rs) == [1, 1, 2, 3, 4]


def test_selectors():
    frame = pd.DataFrame({"run": [1, 2, 3], "device": ["cpu", "cpu", "cuda:0"], "fmmforge_version": ["0.1.0"] * 3,
                          "machine": ["a|b", "a|b", "GPU"], "dtype": ["float32"] * 3,
                          "created_at": ["2026-12-01T10:00:00+00:00", "2026-12-02T10:00:00+00:00",
                                         "2026-12-03T10:00:00+00:00"]})
    assert select(frame, "run:last")["run"].tolist() == [3]
    assert select(frame, "run:last-1")["run"].tolist() == [2]
    assert select(frame, "device:cpu+since:2026-12-02")["run"].tolist() == [2]
    assert select(frame, "device:cuda:0")["run"].tolist() == [3]
    assert select(frame, "version:0.1.0+until:2026-12-01T12:00")["run"].tolist() == [1]
    for bad in ("run:first", "colour:red", "device", "since:tomorrow"):
        with pytest.raises(FmmforgeError, match="cannot read"):
            parse_selector(bad)


def test_compare_two_runs_side_by_side(tmp_path, cli, monkeypatch):
    s = Store(tmp_path / "home")
    seed(s, [record(when="2026-12-01T10:00:00+00:00", kernel_s=0.010),
             record(size=1024, when="2026-12-01T10:01:00+00:00", kernel_s=0.080),
             record(when="2026-12-02T10:00:00+00:00", kernel_s=0.008)])
    table = compare(load_records(s), "run:1", "run:2")
    assert table["size"].tolist() == ["512x512x512", "1024x1024x1024"]
    assert table["kernel_ratio"].iloc[0] == pytest.approx(0.8)
    assert pd.isna(table["kernel_ratio"].iloc[1])  # run 2 did not measure 1024
    monkeypatch.setenv("FMMFORGE_HOME", str(s.home))
    code, out, err = cli("report", "--compare", "run:1", "run:2", "-o", tmp_path / "cmp")
    assert code == 0, err
    assert format_value("kernel_ratio", 0.8) in out
    assert pd.read_csv(tmp_path / "cmp" / "compare.csv")["kernel_ratio"].tolist()[0] == pytest.approx(0.8)
    code, out, err = cli("report", "--compare", "run:1", "run:9")
    assert code == 2 and "selector 'run:9' matches no records" in err
    code, out, err = cli("report", "--runs")
    assert code == 0 and "run" in out and "2026-12-02T10:00:00" in out


class _Model:
    name = "test-model"

    def predict_ms(self, row):
        return row["kernel_median_ms"] * 1.1


def test_cost_model_and_tuned_choices_when_present(store):
    tuned = pd.DataFrame({"shape_class": ["square >= 1024"], "choice": ["strassen L1"], "speedup": [1.05]})
    report = build_report(store, cost_model=_Model(), tuned=tuned)
    six, seven = report.sections[5], report.sections[6]
    assert "median |error| 10.0 %" in six.notes[0] and six.figures
    assert six.tables[0].frame["error_pct"].tolist() == pytest.approx([10.0] * 8)
    assert "predicted_ms" in report.records.columns
    assert seven.tables[0].frame.equals(tuned)


def test_discovery_lists_stored_schemes_against_best_known(store):
    from fmmforge.core.catalogue import resolve
    from fmmforge.core.known_ranks import KNOWN_RANKS, best_known
    from fmmforge.core.store import Provenance

    store.add(resolve("strassen"), Provenance(source="search", engine="flip-graph"), name="mine")
    store.add(resolve("laderman"), Provenance(source="import:laderman.json"))
    table = build_report(store).sections[7].tables[0].frame
    assert table[["name", "format", "rank", "best_known", "gap", "found_by"]].values.tolist() == [
        ["mine", "<2,2,2>", 7, 7, 0, "flip-graph"], ["store:2", "<3,3,3>", 23, 23, 0, "import:laderman.json"]]
    assert best_known((4, 4, 4), "Z2") == 47 and best_known((4, 4, 4), "Z") == 49
    assert all(row.naive == n * m * p for (n, m, p), row in KNOWN_RANKS.items())


def test_report_command_refuses_bad_output(tmp_path, cli):
    target = tmp_path / "file"
    target.write_text("x")
    code, out, err = cli("report", "-o", target)
    assert code == 2 and "is an existing file, not a directory" in err
    code, out, err = cli("report")
    assert code == 2 and "-o DIR" in err
    assert target.read_text() == "x"


def test_unreadable_record_fields_do_not_crash_the_report(tmp_path, cli, monkeypatch):
    import sqlite3

    s = Store(tmp_path / "home")
    seed(s, [record(), record(size=1024)])
    with sqlite3.connect(s.path) as conn:
        conn.execute("UPDATE records SET plan = '{not json', created_at = 'sometime' WHERE id = 1")
        conn.execute("UPDATE records SET plan = '[1, 2]', machine = 'no pipes here' WHERE id = 2")
    monkeypatch.setenv("FMMFORGE_HOME", str(s.home))
    code, out, err = cli("report", "-o", tmp_path / "out")
    assert code == 0, err
    csv = pd.read_csv(tmp_path / "out" / "records.csv")
    assert csv["ceiling"].isna().all()  # no plan to read the schemes from: no ceiling, not a guess
    code, out, err = cli("report", "--compare", "run:1", "since:2026")
    assert code == 2 and "cannot read since '2026'" in err


def test_the_tuned_section_shows_the_stored_choices_of_the_device(store):
    from fmmforge.codegen.choices import store_choice
    from fmmforge.codegen.plan import make_plan

    plan, _ = make_plan("strassen", 1, backend="torch", dtype="float32", device="cpu")
    store_choice(plan, machine=MACHINE, shape=(1024, 1024, 1024), speedup=1.07, baseline_median_s=0.5, store=store)
    store_choice(plan, machine="another machine", shape=(2048, 2048, 2048), speedup=1.2, baseline_median_s=1.0,
                 store=store)
    seven = next(s for s in build_report(store).sections if s.title.startswith("7."))
    (table,) = seven.tables
    assert table.frame["shape class (M×K×N, at least)"].tolist() == ["1024x1024x1024"]  # this machine's only
    assert table.frame["speedup"].tolist() == [1.07] and "strassen" in table.frame["plan"][0]


# ---------------------------------------------------------------------- runs: one per measuring command
def test_every_measuring_command_is_a_run_of_its_own(cli, monkeypatch):
    from fmmforge.codegen.records import query_records
    from fmmforge.reports.data import run_summary

    bench = ("bench", "--sizes", "24", "--algos", "strassen", "--levels", "1", "--dtype", "float64",
             "--pairs", "3", "--cutoff", "2", "--min-sample-ms", "1")
    for args in (("score", "strassen", "--reward", "latency", "--size", "24", "--dtype", "float64"), bench,
                 ("--version",), bench, ("list",)):
        code, _, err = cli(*args)
        assert code == 0, err
    records = query_records()
    assert len(records) == 3 and len({r.run for r in records}) == 3  # the same plan and size, in three runs
    runs = run_summary(load_records(Store()))
    assert runs["command"].tolist() == ["score", "bench", "bench"]  # list and --version recorded nothing
    assert runs["run"].tolist() == [1, 2, 3] and runs["records"].tolist() == [1, 1, 1]
    assert runs["devices"].tolist() == ["cpu"] * 3
    code, out, err = cli("report", "--runs")
    assert code == 0 and "one fmmforge command that recorded measurements" in out and "score" in out


def test_a_store_from_before_runs_opens_and_keeps_its_records_grouped_by_time(tmp_path):
    import sqlite3

    from fmmforge.codegen.records import TABLES
    from fmmforge.core.store import MIGRATIONS, measurement_run

    home = tmp_path / "old"
    home.mkdir()
    with sqlite3.connect(home / "store.sqlite") as conn:  # the schema as fmmforge wrote it before runs
        for step in MIGRATIONS[:4]:
            conn.executescript(step)
        conn.executescript(";".join(TABLES.migrations[:2]))
        conn.execute("INSERT INTO table_owners VALUES ('codegen.records', 2)")
        conn.execute("PRAGMA user_version = 4")
    old = Store(home)
    seed(old, [record(when="2026-12-01T10:00:00+00:00"), record(size=1024, when="2026-12-01T10:01:00+00:00")])
    with measurement_run("bench"):
        seed(old, [record(when="2026-12-02T10:00:00+00:00"), record(size=1024, when="2026-12-02T10:01:00+00:00")])
    seed(old, [record(when="2026-12-03T10:00:00+00:00")])  # from Python, outside any run
    frame = load_records(old)
    assert frame["run"].tolist() == [1, 1, 2, 2, 3]
    assert frame["command"].tolist() == ["-", "-", "bench", "bench", "-"]


def test_the_tuned_section_says_the_vendor_matmul_was_chosen(store):
    """`tune` chose the vendor matmul (it clears the class then): the report says so, not "run tune"."""
    from fmmforge.codegen.choices import store_choice
    from fmmforge.codegen.plan import make_plan
    from fmmforge.core.store import measurement_run

    with measurement_run("tune"):  # what `fmmforge tune` records: kernels slower than the vendor matmul
        seed(store, [record("strassen", 1, 2048, kernel_s=0.52, vendor_s=0.50, when="2026-12-02T10:00:00+00:00"),
                     record("laderman", 1, 2048, kernel_s=0.55, vendor_s=0.50, when="2026-12-02T10:01:00+00:00")])
    plan, _ = make_plan("strassen", 1, backend="torch", dtype="float32", device="cpu")
    store_choice(plan, machine=MACHINE, shape=(1024, 1024, 1024), speedup=1.07, baseline_median_s=0.1, store=store)
    seven = next(s for s in build_report(store).sections if s.title.startswith("7."))
    assert not any("run `fmmforge tune`" in note for note in seven.notes)
    frame = seven.tables[0].frame
    assert frame["shape class (M×K×N, at least)"].tolist() == ["1024x1024x1024", "2048x2048x2048"]
    kernel, vendor = frame.to_dict("records")
    assert "strassen L1" in kernel["plan"] and kernel["speedup"] == 1.07
    assert vendor["plan"] == "the vendor matmul (no kernel chosen)" and vendor["vendor_median_ms"] == pytest.approx(500)
    assert vendor["measured by tune"] == "run 2: 2 measured, best strassen L1 0.962x"
    assert any("the vendor matmul" in note for note in seven.notes)
