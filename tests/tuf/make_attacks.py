#!/usr/bin/env python3
"""Build the TUF attack repositories for tests/tests/tuf_attacks.rs with
python-tuf (PyPI `tuf`), an implementation independent of ours, so that our
verifier is not only tested against metadata our own signer wrote.

Usage: make_attacks.py OUT_DIR

For every scenario OUT_DIR/NAME/ holds:
  root.json            the root the device trusts (installed with it)
  steps/1/, steps/2/   repository states served one after another (each
                       with metadata/ and targets/); every step but the last
                       is accepted, the last one is the attack
  scenario.json        {"steps": N, "target": NAME or null, "model": ...}

Targets are written in both consistent-snapshot layouts: SHA256.NAME
(tough's, fleet-repo's, the agent's) and DIR/SHA256.BASE (the TUF
specification's, `fleet-agent tuf`'s).
"""

import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

NOW = datetime.now(timezone.utc).replace(microsecond=0)
MODEL = "ballot-box-v2"
GOOD = f"firmware/{MODEL}/1.0.0.tar"
LAPTOP = "firmware/id-laptop/1.0.0.tar"
NEW = f"firmware/{MODEL}/1.1.0.tar"


def later(**kw):
    return NOW + timedelta(**kw)


class Keys:
    def __init__(self):
        gen = CryptoSigner.generate_ed25519
        self.root1, self.root2 = gen(), gen()
        self.targets, self.snapshot, self.timestamp = gen(), gen(), gen()
        self.rogue = gen()


def root(keys, version=1, root_threshold=1):
    r = Root(version=version, expires=later(days=365), consistent_snapshot=True)
    r.add_key(keys.root1.public_key, "root")
    if root_threshold > 1:
        r.add_key(keys.root2.public_key, "root")
    r.roles["root"].threshold = root_threshold
    r.add_key(keys.targets.public_key, "targets")
    r.add_key(keys.snapshot.public_key, "snapshot")
    r.add_key(keys.timestamp.public_key, "timestamp")
    return r


def signed(obj, *signers):
    md = Metadata(obj)
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes(JSONSerializer(compact=False))


def image(name):
    """A small image whose bytes name it (a tarball stands in elsewhere)."""
    return (f"image {name}\n" * 4).encode()


def targets(version, names, keys, signer=None, expires=None):
    t = Targets(version=version, expires=expires or later(days=365))
    for name in names:
        tf = TargetFile.from_data(name, image(name), ["sha256"])
        parts = name.split("/")
        tf.unrecognized_fields["custom"] = {
            "artifact": parts[0],
            "model": parts[1],
            "version": parts[2].removesuffix(".tar"),
        }
        t.targets[name] = tf
    return t, signed(t, signer or keys.targets)


def snapshot(version, targets_version, keys, expires=None):
    s = Snapshot(
        version=version,
        expires=expires or later(days=30),
        meta={"targets.json": MetaFile(version=targets_version)},
    )
    return signed(s, keys.snapshot)


def timestamp(version, snapshot_version, keys, expires=None):
    t = Timestamp(
        version=version,
        expires=expires or later(days=1),
        snapshot_meta=MetaFile(version=snapshot_version),
    )
    return signed(t, keys.timestamp)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_step(d, roots, ts, snapshots, targetss, images):
    """roots: [bytes] by version; snapshots/targetss: {version: bytes};
    images: {name: (signed_sha256, served_bytes)}."""
    m = os.path.join(d, "metadata")
    for i, r in enumerate(roots, start=1):
        write(os.path.join(m, f"{i}.root.json"), r)
    write(os.path.join(m, "root.json"), roots[-1])
    write(os.path.join(m, "timestamp.json"), ts)
    for v, b in snapshots.items():
        write(os.path.join(m, f"{v}.snapshot.json"), b)
    for v, b in targetss.items():
        write(os.path.join(m, f"{v}.targets.json"), b)
    t = os.path.join(d, "targets")
    for name, (sha, data) in images.items():
        write(os.path.join(t, f"{sha}.{name}"), data)
        head, base = name.rsplit("/", 1)
        write(os.path.join(t, head, f"{sha}.{base}"), data)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def honest(names):
    return {n: (sha(image(n)), image(n)) for n in names}


def scenario(out, name, trusted_root, steps, target=None, model=MODEL):
    d = os.path.join(out, name)
    write(os.path.join(d, "root.json"), trusted_root)
    for i, step in enumerate(steps, start=1):
        write_step(os.path.join(d, "steps", str(i)), **step)
    write(
        os.path.join(d, "scenario.json"),
        json.dumps({"steps": len(steps), "target": target, "model": model}).encode(),
    )


def main(out):
    k = Keys()
    r1 = signed(root(k), k.root1)
    names = [GOOD, LAPTOP]
    _, t1 = targets(1, names, k)
    base = dict(roots=[r1], snapshots={1: snapshot(1, 1, k)}, targetss={1: t1})

    # A repository with nothing wrong: the control for every attack below.
    scenario(out, "good", r1, [dict(base, ts=timestamp(1, 1, k), images=honest(names))], GOOD)

    # Rollback, root: after root v2, a "3.root.json" that is root v1 again.
    r2 = signed(root(k, version=2), k.root1)
    step1 = dict(base, roots=[r1, r2], ts=timestamp(1, 1, k), images=honest(names))
    scenario(out, "rollback-root", r1, [step1, dict(step1, roots=[r1, r2, r1])])

    # Rollback, timestamp: v2 trusted, then v1 served.
    s1 = dict(base, images=honest(names))
    scenario(
        out,
        "rollback-timestamp",
        r1,
        [dict(s1, ts=timestamp(2, 1, k)), dict(s1, ts=timestamp(1, 1, k))],
    )

    # Rollback, snapshot: snapshot v2 trusted, then a timestamp v3 naming v1.
    snaps = {1: snapshot(1, 1, k), 2: snapshot(2, 1, k)}
    scenario(
        out,
        "rollback-snapshot",
        r1,
        [
            dict(s1, snapshots=snaps, ts=timestamp(2, 2, k)),
            dict(s1, snapshots=snaps, ts=timestamp(3, 1, k)),
        ],
    )

    # Rollback, targets: targets v2 trusted, then snapshot v3 naming targets v1.
    _, t2 = targets(2, names, k)
    scenario(
        out,
        "rollback-targets",
        r1,
        [
            dict(s1, targetss={1: t1, 2: t2}, snapshots={2: snapshot(2, 2, k)}, ts=timestamp(2, 2, k)),
            dict(s1, targetss={1: t1, 2: t2}, snapshots={3: snapshot(3, 1, k)}, ts=timestamp(3, 3, k)),
        ],
    )

    # Freeze: the same timestamp replayed after it expired (the test moves
    # the device's trusted time two hours on for the second step).
    fresh = dict(s1, ts=timestamp(1, 1, k, expires=later(hours=1)))
    scenario(out, "freeze-replay", r1, [fresh, fresh])

    # Freeze, first contact: a timestamp that expired an hour ago.
    scenario(out, "expired-timestamp", r1, [dict(s1, ts=timestamp(1, 1, k, expires=later(hours=-1)))])

    # Mix-and-match: the snapshot names targets v2; what is served as
    # 2.targets.json is the (validly signed) targets v1.
    scenario(
        out,
        "mix-and-match",
        r1,
        [dict(s1, targetss={2: t1}, snapshots={1: snapshot(1, 2, k)}, ts=timestamp(1, 1, k))],
    )

    # Endless data: the target is served with a megabyte more than signed.
    endless = honest(names)
    endless[GOOD] = (sha(image(GOOD)), image(GOOD) + b"\0" * (1024 * 1024))
    scenario(out, "endless-target", r1, [dict(s1, ts=timestamp(1, 1, k), images=endless)], GOOD)

    # Endless data on metadata: a timestamp.json of 2 MiB.
    big_ts = timestamp(1, 1, k) + b" " * (2 * 1024 * 1024)
    scenario(out, "endless-timestamp", r1, [dict(s1, ts=big_ts)])

    # Hash mismatch: same length, other bytes.
    swapped = honest(names)
    good = image(GOOD)
    swapped[GOOD] = (sha(good), good[:-1] + b"X")
    scenario(out, "hash-mismatch", r1, [dict(s1, ts=timestamp(1, 1, k), images=swapped)], GOOD)

    # An unsigned target: targets v2 adds one and carries no signature.
    t2_obj, _ = targets(2, names + [NEW], k)
    unsigned = Metadata(t2_obj).to_bytes(JSONSerializer(compact=False))
    bad_step = dict(
        roots=[r1],
        targetss={2: unsigned},
        snapshots={2: snapshot(2, 2, k)},
        ts=timestamp(2, 2, k),
        images=honest(names + [NEW]),
    )
    scenario(out, "unsigned-target", r1, [dict(s1, ts=timestamp(1, 1, k)), bad_step], NEW)

    # Signed with the wrong key (one root does not list).
    _, rogue = targets(2, names + [NEW], k, signer=k.rogue)
    scenario(
        out, "wrong-key", r1, [dict(s1, ts=timestamp(1, 1, k)), dict(bad_step, targetss={2: rogue})], NEW
    )

    # The controller compromised: it holds the snapshot and timestamp keys
    # and signs a targets v2 with a new target using them.
    _, by_snapshot_key = targets(2, names + [NEW], k, signer=k.snapshot)
    scenario(
        out,
        "compromised-controller",
        r1,
        [dict(s1, ts=timestamp(1, 1, k)), dict(bad_step, targetss={2: by_snapshot_key})],
        NEW,
    )

    # Root threshold 2: root v2 signed by both root keys is accepted; a
    # root v3 signed by one of them is refused.
    rt1 = signed(root(k, root_threshold=2), k.root1, k.root2)
    rt2 = signed(root(k, version=2, root_threshold=2), k.root1, k.root2)
    rt3 = signed(root(k, version=3, root_threshold=2), k.root1)
    st = dict(s1, ts=timestamp(1, 1, k))
    scenario(
        out,
        "root-below-threshold",
        rt1,
        [dict(st, roots=[rt1, rt2]), dict(st, roots=[rt1, rt2, rt3])],
    )

    # Another hardware model: a valid target for the identity laptop,
    # asked for by a ballot box.
    scenario(out, "other-model", r1, [dict(s1, ts=timestamp(1, 1, k))], LAPTOP)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
