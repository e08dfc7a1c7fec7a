"""Reads `perf script -F ip,sym` stacks on stdin; prints the share of samples per class, a
sample going to the first class one of its frames names (benches/profile/uncached)."""
import collections
import sys

CLASSES = [
    ("the RSA signature (SigningKey::sign_jws)", ("sign_jws",)),
    ("the RS256 verification", ("verify_sig", "VerifyKey::verify")),
    ("reading the token before its signature, its claims after",
     ("UnverifiedJwt", "IdpClaims")),
    ("the token cache", ("mint::cache", "TokenCache")),
    ("remembered verifications", ("DigestMap",)),
    ("grants", ("grants::",)),
    ("minting besides the signature", ("mint::", "Minter")),
]


def stacks(lines):
    stack = []
    for line in lines:
        if line.strip():
            stack.append(line.strip())
        elif stack:
            yield stack
            stack = []
    if stack:
        yield stack


counts = collections.Counter()
total = 0
for stack in stacks(sys.stdin):
    total += 1
    name = next((name for name, marks in CLASSES
                 if any(mark in frame for frame in stack for mark in marks)),
                "everything else (tonic, h2, tokio, the kernel)")
    counts[name] += 1
print(f"\n{total} samples of the default serve during the uncached rows:\n")
print("| class | samples | share |\n|---|---:|---:|")
for name, count in counts.most_common():
    print(f"| {name} | {count} | {100 * count / max(total, 1):.1f} % |")
