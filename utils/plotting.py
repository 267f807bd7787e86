"""R-D plots with matplotlib (headless)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_rd(curves, path, xlabel="distortion D (MSE)", ylabel="rate R", title=None, logx=False, logy=False,
            fmt=None):
    """Draws R-D curves into `path` (a file: PNG/PDF by extension, or `fmt`; or a binary file object with `fmt`).

    Each curve is a dict: `label`, `D`, `R`, optional `style` ('line' | 'points'), `marker` for a line's points,
    `band` = (R_lo, R_hi) for an interval drawn as a shaded band, and `yerr` for error bars on points.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for c in curves:
        if c.get("style", "line") == "points":
            ax.errorbar(c["D"], c["R"], yerr=c.get("yerr"), fmt="o", ms=4, capsize=2, label=c["label"])
        else:
            line, = ax.plot(c["D"], c["R"], "-", marker=c.get("marker"), ms=4, label=c["label"])
            if c.get("band") is not None:
                ax.fill_between(c["D"], c["band"][0], c["band"][1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    plt.close(fig)
