"""The roofline report: `pybn bench` as a benchmark run, printing the table
(pybn vs PyTorch vs reference, GB/s, fraction of measured copy bandwidth)."""
from pybn.bench import _format_table, run


def test_roofline_report(capsys):
    rows, bandwidth, threads = run(threads=2, quick=True, progress=False)
    with capsys.disabled():
        print()
        print(_format_table(rows, bandwidth, threads, all("torch" in r for r in rows)))
