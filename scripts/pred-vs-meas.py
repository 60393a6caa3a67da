"""One line from `simkvm migrate --predict --json`: predicted / measured side by side (used by the
scripts/testbed-*-migrations.sh experiments). Usage: ... | python3 scripts/pred-vs-meas.py LABEL"""
import json
import sys

r = json.load(sys.stdin)
p, m = r["predicted"], r["measured"]
label = sys.argv[1] if len(sys.argv) > 1 else ""
if not m.get("converged"):
    print(f"{label}: measured {m.get('outcome')}: {m.get('reason')}; predicted {p.get('outcome')}, "
          f"total {p['total_time_s']:.1f} s, downtime {p['downtime_s'] * 1e3:.0f} ms")
    sys.exit(0)


def rate(x: dict) -> float:
    return x["ram_transferred_bytes"] / max(x["precopy_time_s"], 1e-9) / 2**20


print(f"{label}: total {p['total_time_s']:5.1f} / {m['total_time_s']:5.1f} s, "
      f"pre-copy {p['precopy_time_s']:5.1f} / {m['precopy_time_s']:5.1f} s, "
      f"RAM {p['ram_transferred_bytes'] / 2**20:6.1f} / {m['ram_transferred_bytes'] / 2**20:6.1f} MiB "
      f"at {rate(p):5.1f} / {rate(m):5.1f} MiB/s, downtime {p['downtime_s'] * 1e3:4.0f} / "
      f"{m['downtime_s'] * 1e3:4.0f} ms, iterations {p['iterations']} / {m['iterations']} (predicted / measured)")
