"""The roofline report: `pybn bench` as a benchmark run, printing the table
(pybn vs PyTorch vs reference, GB/s, fraction of measured copy bandwidth)."""
from pybn.bench import format_table, geomean, run


def test_roofline_report(capsys):
    rows, bandwidth, threads = run(threads=2, quick=True, progress=False)
    with capsys.disabled():
        print()
        have_torch = all("torch" in r for r in rows)
        print(format_table(rows, bandwidth, threads, have_torch))
        if have_torch:
            print(f"geometric-mean speedup over PyTorch: {geomean([r['torch'] / r['pybn'] for r in rows]):.2f}x")
