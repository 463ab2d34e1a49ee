"""The report's plots read on a noisy store: many series, an exploding IQR band, outliers, a long
model name, schemes recorded by fingerprint only. Asserts on the matplotlib figures themselves
(after the renderer drew them), and, where chromium is installed, on the page a person sees."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from helpers import record

from fmmforge.codegen.records import add_record
from fmmforge.core.catalogue import resolve
from fmmforge.core.store import Provenance, Store
from fmmforge.reports import build_report, plots, write_report
from fmmforge.reports.data import load_records, record_rows

NAMES = ("strassen", "strassen-winograd", "laderman", "alphatensor:4,4,4", "alphatensor:2,2,3", "strassen-2x2x3",
         "naive:2,2,2")
LONG_MODEL = ("calibrated v7 (120 records), 2 threads float32; calibrated v7 (48 records), 1 threads float32; "
              "calibrated v7 (36 records), 2 threads float64")


def noisy_records():
    """14 series (7 schemes at 1 and 2 levels) at 4 sizes, one band up to ~1e13, one 6x outlier."""
    out, minute = [], 0
    for n in (512, 1024, 2048, 4096):
        for i, name in enumerate(NAMES):
            for L in (1, 2):
                minute += 1
                speedup = 0.9 + 0.03 * i + 0.05 * L
                if (name, L, n) == ("laderman", 1, 4096):
                    speedup = 6.0  # an outlier
                r = record(name, L, n, kernel_s=0.01 / speedup, vendor_s=0.01,
                           when=f"2026-12-01T{10 + minute // 60:02d}:{minute % 60:02d}:00+00:00")
                if (name, L, n) == ("strassen", 2, 2048):
                    r = dataclasses.replace(r, iqr_s=1e11)  # the band reaches ~1e13
                out.append(dataclasses.replace(r, id=len(out) + 1))
    return out


@pytest.fixture(scope="module")
def frame():
    rows = record_rows(noisy_records())
    return rows.assign(predicted_ms=rows["kernel_median_ms"] * 1.1)


def drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig, fig.canvas.get_renderer()


FIGURES = {
    "speedup": lambda f: plots.speedup_figure(f, "cpu"),
    "gflops": lambda f: plots.gflops_figure(f, "cpu", None),
    "error": lambda f: plots.error_figure(f),
    "memory": lambda f: plots.memory_figure(f),
    "cost-model": lambda f: plots.cost_model_figure(f, LONG_MODEL),
}


def test_an_exploding_iqr_band_does_not_flatten_the_speedup_plot(frame):
    fig = plots.speedup_figure(frame, "cpu")
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    speedups = frame["speedup"]
    assert speedups.min() / 1.5 <= low <= speedups.min() and speedups.max() <= high <= speedups.max() * 1.5
    assert ax.get_yscale() == "log"  # 0.95 .. 6: a linear axis would squash the rest under the outlier
    for band in ax.collections:  # no band reaches past the axis it is drawn on
        for path in band.get_paths():
            ys = path.vertices[:, 1]
            assert ys.max() <= high * (1 + 1e-9) and ys.min() >= low * (1 - 1e-9)
    assert plots.bands_cut(frame) == 1
    section = build_report_section(frame)
    assert any("1 measurement(s) have an IQR band reaching past the plot" in note for note in section.notes)


def build_report_section(frame):
    from fmmforge.reports.sections import speedup_section

    return speedup_section(frame, "cpu")


@pytest.mark.parametrize("kind", list(FIGURES))
def test_legend_below_the_axes_with_every_series_once_and_the_title_inside(frame, kind):
    fig, renderer = drawn(FIGURES[kind](frame))
    (ax,) = fig.axes
    (legend,) = fig.legends
    box, axes_box, figure_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer), fig.bbox
    assert not box.overlaps(axes_box)  # never over the data
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0  # nothing cut off
    title = ax.title.get_window_extent(renderer)
    assert figure_box.x0 <= title.x0 and title.x1 <= figure_box.x1 and title.y1 <= figure_box.y1
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == len(set(texts))  # one entry per series
    expected = set(frame["algorithm"]) if kind == "error" else {f"{a} L{L}" for a, L in zip(frame["algorithm"],
                                                                                            frame["levels"])}
    assert expected <= set(texts)


@pytest.mark.parametrize("kind", ["speedup", "gflops", "memory", "cost-model"])
def test_each_series_has_a_colour_and_marker_of_its_own(frame, kind):
    fig = FIGURES[kind](frame)
    (ax,) = fig.axes
    styles = {}
    for artist in [*ax.get_lines(), *ax.collections]:
        label = artist.get_label()
        if label.startswith("_") or not label.endswith(("L1", "L2")):
            continue
        if hasattr(artist, "get_marker"):
            styles[label] = (artist.get_color(), artist.get_marker())
        else:  # a scatter: its face colour and path
            styles[label] = (tuple(artist.get_facecolor()[0]), artist.get_paths()[0].vertices.tobytes())
    assert len(styles) == 14
    assert len(set(styles.values())) == 14
    assert len({colour for colour, _ in styles.values()}) == 14  # 14 series: 14 colours


def test_a_series_looks_the_same_in_every_plot(frame):
    from matplotlib.colors import to_rgba

    # the memory plot leaves out what has no memory figures: its series must keep their styles
    partial = frame.assign(workspace_mib=frame["workspace_mib"].where(frame["algorithm"] != "strassen"),
                           peak_extra_mib=frame["peak_extra_mib"].where(frame["algorithm"] != "strassen"))

    def lines(fig):
        return {line.get_label(): (to_rgba(line.get_color()), line.get_marker()) for line in fig.axes[0].get_lines()
                if line.get_label().endswith(("L1", "L2"))}

    speedup, memory = lines(plots.speedup_figure(partial, "cpu")), lines(plots.memory_figure(partial))
    assert "strassen L1" in speedup and "strassen L1" not in memory and len(memory) == 12
    assert all(speedup[label] == memory[label] for label in memory)
    scatter = plots.cost_model_figure(partial, "m").axes[0].collections
    assert all(to_rgba(c.get_facecolor()[0]) == speedup[c.get_label()][0] for c in scatter)


def test_style_pairs_stay_distinct_for_many_series():
    pairs = [plots.style(i) for i in range(120)]
    assert len(set(pairs)) == 120 and len({c for c, _ in pairs[:14]}) == 14


def test_the_long_model_name_wraps_inside_the_figure():
    assert all(len(line) < 120 for line in plots.wrap_title("Cost model " + LONG_MODEL).splitlines())


def test_schemes_recorded_by_fingerprint_appear_by_name(tmp_path):
    """`score --reward latency` recorded Strassen as fp:9b9a3b3685c8 before records carried names."""
    store = Store(tmp_path / "home")
    strassen = resolve("strassen").fingerprint
    legacy = dataclasses.replace(record("strassen", 1, 512), algorithm=f"fp:{strassen[:12]}", fingerprint=strassen,
                                 plan=json.dumps({"algorithms": [f"fp:{strassen[:12]}"], "fingerprints": [strassen]}))
    add_record(legacy, store)
    mine = resolve("strassen*strassen")
    store.add(mine, Provenance(source="test"), name="s2")
    add_record(dataclasses.replace(legacy, algorithm=f"fp:{mine.fingerprint[:12]}", fingerprint=mine.fingerprint,
                                   plan=json.dumps({"algorithms": ["x"], "fingerprints": [mine.fingerprint]})), store)
    frame = load_records(store)
    assert frame["algorithm"].tolist() == ["strassen", "s2"]
    assert frame["ceiling"].iloc[0] == pytest.approx(8 / 7)  # the name resolves: the ceiling is known again
    fig = plots.speedup_figure(frame, "cpu")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "strassen L1" in labels and not any(label.startswith("fp:") for label in labels)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_renders_in_a_browser(tmp_path):
    store = Store(tmp_path / "home")
    for r in noisy_records():
        add_record(dataclasses.replace(r, id=None), store)
    index = write_report(store, tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,2000", index.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1400, 2000)
        assert len(im.convert("RGB").getcolors(1 << 24)) > 50  # drawn, not a blank page
