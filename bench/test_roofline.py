"""The roofline report: `pybn bench` as a benchmark run, printing the table
(pybn vs PyTorch vs reference, GB/s, fraction of measured copy bandwidth)."""
from pybn.bench import report, run


def test_roofline_report(capsys):
    rows, bandwidth, threads = run(threads=2, quick=True, progress=False)
    with capsys.disabled():
        print()
        print(report(rows, bandwidth, threads))
