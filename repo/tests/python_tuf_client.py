"""python-tuf's client (ngclient), an independent TUF implementation, loads
a repository directory from ROOT (the root it trusts) and prints TARGET's
bytes. Run by python_tuf.rs. Usage: python_tuf_client.py REPO ROOT WORK TARGET"""
import os
import sys
from urllib.parse import unquote, urlparse

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface, Updater


class FileFetcher(FetcherInterface):
    """Reads file:// URLs; a missing file is a 404, as from a web server
    (the client probes for root N+1 until one is missing)."""

    def _fetch(self, url):
        path = unquote(urlparse(url).path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise DownloadHTTPError(f"{path} not found", 404)
        return iter([data])


def main():
    repo, root, work, target = sys.argv[1:5]
    metadata_dir = os.path.join(work, "metadata")
    targets_dir = os.path.join(work, "targets")
    os.makedirs(metadata_dir, exist_ok=True)
    os.makedirs(targets_dir, exist_ok=True)
    with open(root, "rb") as f:
        trusted = f.read()
    updater = Updater(
        metadata_dir,
        "file://" + os.path.join(repo, "metadata") + "/",
        targets_dir,
        "file://" + os.path.join(repo, "targets") + "/",
        FileFetcher(),
        bootstrap=trusted,
    )
    updater.refresh()
    info = updater.get_targetinfo(target)
    if info is None:
        sys.exit(f"{target}: not in the verified targets metadata")
    path = updater.download_target(info)
    with open(path, "rb") as f:
        sys.stdout.buffer.write(f.read())


if __name__ == "__main__":
    main()
