"""The what-if HTML report rendered in real headless Chromium (Debian's `chromium`): every plot
loads and none is blank. Chromium runs in its own process group, killed on timeout or failure."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import timedelta

import pytest

from tests.lakes import FORECAST_T0, H, forecast_settings, hot_end_lake, prediction, put_predictions

CHECK_JS = """
<script>
window.addEventListener('load', () => {
  const out = [];
  for (const img of document.querySelectorAll('img')) {
    let variance = null;
    if (img.naturalWidth > 0) {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let s = 0, s2 = 0, n = 0;
      for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
      variance = s2 / n - (s / n) * (s / n);
    }
    out.push({alt: img.alt, width: img.naturalWidth, complete: img.complete, variance: variance});
  }
  const pre = document.createElement('pre');
  pre.id = 'weaver-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(args: list[str], profile, timeout: float = 120.0) -> str:
    """Run headless chromium with the house flags; its whole process group dies on timeout."""
    exe = shutil.which("chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    return out.decode("utf-8", "replace")


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed: run scripts/system-deps.sh (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_with_every_plot_loaded_and_not_blank(tmp_path):
    import matplotlib.image as mpimg

    from weaver.whatif import render_report

    s = forecast_settings(hot_end_lake(tmp_path / "lake"))
    run = FORECAST_T0 + 17 * H
    p = prediction("h", run_ts=run, split_key="b00000190", split_ts=run + 2 * H, window=timedelta(hours=24))
    p["reason"] = "throughput"
    put_predictions(s, [p])
    r = render_report(s, at=run, model="arima", out_dir=tmp_path / "report", samples=50)
    assert r["partitions"] == ["h"] and r["plots"] == 4  # fan, children, largest before/after, reliability

    page = open(r["html"], encoding="utf-8").read()
    harness = tmp_path / "harness.html"
    harness.write_text(page.replace("</body>", CHECK_JS + "</body>"), encoding="utf-8")
    dom = chromium(["--virtual-time-budget=15000", "--dump-dom", harness.as_uri()], tmp_path / "profile1")
    m = re.search(r'<pre id="weaver-check">(.*?)</pre>', dom, re.S)
    assert m, "the check script did not run: " + dom[-500:]
    imgs = json.loads(html.unescape(m.group(1)))
    assert len(imgs) == 4
    for img in imgs:
        assert img["complete"] and img["width"] > 0, img
        assert img["variance"] > 50.0, f"plot {img['alt']!r} is blank (pixel variance {img['variance']})"

    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2600", "--hide-scrollbars", _uri(r["html"])],
             tmp_path / "profile2")
    pix = mpimg.imread(shot)
    assert pix.shape[0] >= 2000 and pix[..., :3].std() > 0.05


def _uri(path: str) -> str:
    from pathlib import Path

    return Path(path).resolve().as_uri()
