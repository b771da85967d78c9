"""`pybn info`: version, CPU model, SIMD level, OpenMP threads, cache size, build flags."""
from .. import __version__


def add_parser(subparsers):
    p = subparsers.add_parser("info", help="version, build flags, OpenMP threads, SIMD level")
    p.set_defaults(func=run)


def run(args):
    from .. import _kernels, get_num_threads
    from ..bench import cpu_model
    info = _kernels.build_info()
    rows = [
        ("pybn", __version__),
        ("CPU", cpu_model()),
        ("SIMD level", info["simd"]),
        ("OpenMP", f"on (version {info['openmp_version']})" if info["openmp_version"] else "off"),
        ("threads", f"{get_num_threads()} (OpenMP default {info['openmp_max_threads']})"),
        ("cache", f"{info['cache_bytes'] / 2**20:.0f} MiB (outputs beyond it are streamed)"),
        ("softmax rows", "up to 16 KB streamed out of a buffer beyond the cache" if info["stream_buffered"]
         else "up to 16 KB written with plain stores beyond the cache (streaming lost on AMD CPUs)"),
        ("bn backward", "float32 planes under 16 KB one channel at a time (3 passes)" if info["short_planes_by_channel"]
         else "float32 planes under 16 KB in memory order (strided reads lost on AMD CPUs)"),
        ("compiler", info["compiler"]),
        ("C flags", info["c_flags"] or "(none)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
