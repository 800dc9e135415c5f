"""Is a dataset's download host reachable? A bounded probe, so offline runs fail in seconds.

tensorflow-datasets retries a failed download for minutes (measured: 3 min 37 s
before the error on a machine without network). Before letting tfds download,
the data layer opens one TCP connection to each of the dataset's hosts, all at
once, and waits at most ``timeout`` seconds in total (DNS included, in worker
threads, so a hanging resolver cannot stall it).
"""
import concurrent.futures
import socket
import time
from typing import Iterable, Optional

#: Seconds the whole probe may take.
PROBE_TIMEOUT = 3.0

#: Where tfds fetches each dataset: its GCS mirror and the dataset's source.
DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com",),
    "fashion_mnist": ("storage.googleapis.com", "fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
    "svhn_cropped": ("storage.googleapis.com", "ufldl.stanford.edu"),
    "cifar10": ("storage.googleapis.com", "www.cs.toronto.edu"),
}


def _connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def first_reachable(hosts: Iterable[str], port: int = 443,
                    timeout: float = PROBE_TIMEOUT) -> Optional[str]:
    """The first host that accepted a TCP connection within ``timeout`` s, or None."""
    hosts = list(hosts)
    if not hosts:
        return None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts))
    futures = {pool.submit(_connect, h, port, timeout): h for h in hosts}
    deadline = time.monotonic() + timeout
    try:
        for fut in concurrent.futures.as_completed(futures, timeout=timeout):
            if fut.result():
                return futures[fut]
            if time.monotonic() > deadline:
                break
    except concurrent.futures.TimeoutError:
        pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return None
