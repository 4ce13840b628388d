#!/usr/bin/env python3
"""A compromised controller, written with python-tuf: it holds only the
snapshot and timestamp keys (as the real one does) and tries to ship a
target the release team never signed, by rewriting the repository it serves.

Usage: controller_attack.py REPO_DIR SNAPSHOT_PEM TIMESTAMP_PEM TARGET_NAME MODEL VERSION

REPO_DIR is a fleet-repo repository (DIR/metadata, DIR/targets, as the
controller serves it). The script adds TARGET_NAME to a new targets version
signed with the snapshot key (the only key it has that can sign anything of
substance), then a snapshot and a timestamp naming it, signed with their own
(genuine) keys, and puts the image where the agent looks for it.
"""

import hashlib
import os
import sys

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, TargetFile
from tuf.api.serialization.json import JSONSerializer


def ed25519_from_pem(pem_path):
    """An ed25519 PKCS#8 key. aws-lc-rs writes PKCS#8 v2 (the public key
    included), which this `cryptography` refuses ("extra data"), so the
    32-byte seed is taken from its CurvePrivateKey OCTET STRING."""
    with open(pem_path, "rb") as f:
        lines = [l for l in f.read().splitlines() if l and not l.startswith(b"-----")]
    der = base64.b64decode(b"".join(lines))
    marker = bytes([0x04, 0x22, 0x04, 0x20])
    at = der.find(marker)
    if at < 0 or b"\x2b\x65\x70" not in der:
        sys.exit(f"{pem_path}: not an ed25519 PKCS#8 key")
    return Ed25519PrivateKey.from_private_bytes(der[at + 4 : at + 36])


def signer(pem_path, root, role):
    """The PEM key as a python-tuf signer, with the key id root gives it."""
    private = ed25519_from_pem(pem_path)
    for keyid in root.signed.roles[role].keyids:
        key = root.signed.keys[keyid]
        candidate = CryptoSigner(private, key)
        # The right key: its public half is the one root lists.
        if candidate.public_key.keyval == key.keyval:
            return candidate
    sys.exit(f"{pem_path} is not root's {role} key")


def main(repo, snapshot_pem, timestamp_pem, name, model, version):
    meta = os.path.join(repo, "metadata")
    root = Metadata.from_file(os.path.join(meta, "root.json"))
    snap_signer = signer(snapshot_pem, root, "snapshot")
    ts_signer = signer(timestamp_pem, root, "timestamp")
    ser = JSONSerializer(compact=False)

    ts = Metadata.from_file(os.path.join(meta, "timestamp.json"))
    snap = Metadata.from_file(os.path.join(meta, f"{ts.signed.snapshot_meta.version}.snapshot.json"))
    tv = snap.signed.meta["targets.json"].version
    targets = Metadata.from_file(os.path.join(meta, f"{tv}.targets.json"))

    data = b"the controller's own image\n" * 8
    tf = TargetFile.from_data(name, data, ["sha256"])
    tf.unrecognized_fields["custom"] = {"artifact": "firmware", "model": model, "version": version}
    targets.signed.targets[name] = tf
    targets.signed.version = tv + 1
    targets.signatures.clear()
    targets.sign(snap_signer)
    with open(os.path.join(meta, f"{tv + 1}.targets.json"), "wb") as f:
        f.write(targets.to_bytes(ser))

    snap.signed.version += 1
    snap.signed.meta["targets.json"] = MetaFile(version=tv + 1)
    snap.signatures.clear()
    snap.sign(snap_signer)
    with open(os.path.join(meta, f"{snap.signed.version}.snapshot.json"), "wb") as f:
        f.write(snap.to_bytes(ser))

    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile(version=snap.signed.version)
    ts.signatures.clear()
    ts.sign(ts_signer)
    with open(os.path.join(meta, "timestamp.json"), "wb") as f:
        f.write(ts.to_bytes(ser))

    sha = hashlib.sha256(data).hexdigest()
    path = os.path.join(repo, "targets", f"{sha}.{name}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
