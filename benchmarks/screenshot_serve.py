"""Screenshot of the `attrboost serve` page on the embedded synthetic catalogue -> figures/serve_synthetic.png.

Runs the README's tool commands when their outputs are missing (in --work, default .cache/serve-demo):

    attrboost demo-data demo
    attrboost fit   --csv demo/styles.csv --images demo/images --attributes gender,masterCategory,subCategory,\
articleType,baseColour,season,usage --out demo_model
    attrboost index --model demo_model --images demo/images --out demo_index
    attrboost index --model demo_model --images demo/images --out demo_raw --raw

then serves them (in this process, on a free localhost port), uploads a new synthetic product (rendered with
another seed, so not in the catalogue) in headless chromium (Debian's /usr/bin/chromium through Playwright)
and saves the page. Synthetic images only: never run it on real data for the committed figure.

    python benchmarks/screenshot_serve.py [--work DIR] [--out figures/serve_synthetic.png]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from attrboost.search.cli import main as cli  # noqa: E402

ATTRIBUTES = "gender,masterCategory,subCategory,articleType,baseColour,season,usage"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _step(name: str, argv: list[str], done: Path) -> None:
    if done.exists():
        print(f"{name}: {done} exists, kept")
        return
    t0 = time.perf_counter()
    if cli(argv) != 0:
        sys.exit(f"{name} failed: attrboost {' '.join(argv)}")
    print(f"{name}: {time.perf_counter() - t0:.0f} s")


def build(work: Path) -> dict:
    """The README's commands, each skipped when its output exists."""
    work.mkdir(parents=True, exist_ok=True)
    demo, model, index, raw = work / "demo", work / "demo_model", work / "demo_index", work / "demo_raw"
    _step("demo-data", ["demo-data", str(demo), "-q"], demo / "styles.csv")
    _step("fit", ["fit", "--csv", str(demo / "styles.csv"), "--images", str(demo / "images"), "--attributes",
                  ATTRIBUTES, "--out", str(model), "-q"], model / "manifest.json")
    _step("index", ["index", "--model", str(model), "--images", str(demo / "images"), "--out", str(index), "-q"],
          index / "manifest.json")
    _step("index --raw", ["index", "--model", str(model), "--images", str(demo / "images"), "--out", str(raw),
                          "--raw", "-q"], raw / "manifest.json")
    return {"model": model, "index": index, "raw": raw}


def query_image(folder: Path, seed: int, which: int) -> Path:
    """A synthetic product from another seed's catalogue: drawn like the indexed ones, but not one of them."""
    from attrboost.data.synthetic import plan_catalogue, render_image

    row = plan_catalogue(n_groups=4, per_group=2, seed=seed, n_extra=0)[which]
    path = folder / f"new_product_{row['articleType'].lower()}_{row['baseColour'].lower().replace(' ', '_')}.jpg"
    render_image(row).save(path, format="JPEG", quality=90)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("ATTRBOOST_CACHE", ROOT / ".cache"))
    p.add_argument("--work", type=Path, default=cache / "serve-demo", help="where the demo model and indexes live")
    p.add_argument("--out", type=Path, default=ROOT / "figures" / "serve_synthetic.png")
    p.add_argument("--query-seed", type=int, default=1, help="seed of the catalogue the query product comes from")
    p.add_argument("--query", type=int, default=0, help="which product of that catalogue (0..7)")
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from attrboost.search.serve import create_app, running

    dirs = build(args.work)
    app = create_app(dirs["model"], dirs["index"], dirs["raw"], k=args.k)
    loaded = """([sel, k]) => { const imgs = [...document.querySelectorAll(sel)];
        return imgs.length === k && imgs.every(i => i.complete && i.naturalWidth > 0); }"""
    with tempfile.TemporaryDirectory() as tmp, running(app) as url, sync_playwright() as pw:
        query = query_image(Path(tmp), args.query_seed, args.query)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/?seed=1")
            page.wait_for_function(loaded, arg=["#catalogue .pick img", 24])
            page.set_input_files("#upload", str(query))
            page.wait_for_function(loaded, arg=["#boosted .card img", args.k])
            page.wait_for_function(loaded, arg=["#raw .card img", args.k])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
        finally:
            browser.close()
    print(f"wrote {args.out} (query {query.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
