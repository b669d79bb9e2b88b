import pytest

from tensornet.io import atomic_path, atomic_write_text, save_figure


def test_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "result.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.txt"]


def test_save_figure_uses_the_extension_format(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2])
    assert save_figure(fig, tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(fig, tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"


@pytest.fixture
def ascii_locale():
    """A C (ASCII) locale for one test, so that text written without an encoding would fail."""
    import locale

    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    yield
    locale.setlocale(locale.LC_CTYPE, old)


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    atomic_write_text(tmp_path / "a.md", "χ = 4, ‖W‖ ≤ 1 é")
    assert (tmp_path / "a.md").read_bytes() == "χ = 4, ‖W‖ ≤ 1 é".encode()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_save_figure_uses_dpi_and_png_without_an_extension(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1), dpi=100)
    assert png_size(save_figure(fig, tmp_path / "default.png")) == (300, 150)  # dpi 150
    assert png_size(save_figure(fig, tmp_path / "low.png", dpi=40)) == (80, 40)
    assert png_size(save_figure(fig, tmp_path / "plot")) == (300, 150)


@pytest.mark.parametrize("name", ["plot.Xpng", "plot.txt"])
def test_save_figure_refuses_an_unknown_extension_and_leaves_nothing(tmp_path, name):
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="not supported"):
        save_figure(Figure(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
