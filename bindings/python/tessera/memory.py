"""A device home kept in memory: the simplest ``AppStorage``, for tests, benchmarks and
services that keep nothing on disk (a device in it is gone when the process ends)."""

import threading

from .tessera import AppStorage


class MemoryStorage(AppStorage):
    """The device home as a dict of blobs (``self.blobs``), each change atomic under a lock."""

    def __init__(self):
        self.blobs = {}
        self.lock = threading.Lock()

    def get(self, name):
        with self.lock:
            return self.blobs.get(name)

    def put(self, name, data):
        with self.lock:
            self.blobs[name] = bytes(data)

    def create(self, name, data):
        with self.lock:
            if name in self.blobs:
                return False
            self.blobs[name] = bytes(data)
            return True

    def delete(self, name):
        with self.lock:
            return self.blobs.pop(name, None) is not None

    def list(self, prefix):
        with self.lock:
            return sorted(n for n in self.blobs if n.startswith(prefix))
