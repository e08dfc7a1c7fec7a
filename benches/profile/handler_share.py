"""Reads `perf script -F ip,sym` stacks on stdin; prints the share of samples inside the Check
handler (`<… as Authorization>::check`) and, within it, the share under each of the frames it
calls directly, for `serve` or the no-op (argv[1]; benches/profile/cached)."""
import collections
import sys

HANDLER = "as envoy_types::generated::envoy::service::auth::v3::authorization_server::Authorization>::check"

WRAPPERS = ("futures_util::future::either::Either", "TokenVending::check",
            "core::future::poll_fn", "pipeline::by_deadline")


def stacks(lines):
    stack = []
    for line in lines:
        line = line.strip()
        if line:
            parts = line.split(None, 1)
            stack.append(parts[-1])
        elif stack:
            yield stack
            stack = []
    if stack:
        yield stack


total = inside = 0
callees = collections.Counter()
for stack in stacks(sys.stdin):
    total += 1
    # Leaf first: the outermost handler frame is the last that matches.
    at = [i for i, frame in enumerate(stack) if HANDLER in frame]
    if not at:
        continue
    inside += 1
    i = at[-1] - 1
    # Past the future combinators (the pipeline runs inside an `Either`) and the pipeline's
    # `check` itself, to the part of the Check that did the work.
    while i > 0 and any(wrap in stack[i] for wrap in WRAPPERS):
        i -= 1
    callees[stack[i][:100] if i >= 0 else "(the handler itself)"] += 1
who = sys.argv[1] if len(sys.argv) > 1 else "server"
print(f"\n{who}: {total} samples, {inside} inside the Check handler "
      f"({100 * inside / max(total, 1):.1f} %); under it:\n")
print("| frame called by the handler | share of all samples |\n|---|---:|")
for name, count in callees.most_common(10):
    print(f"| `{name}` | {100 * count / max(total, 1):.1f} % |")
