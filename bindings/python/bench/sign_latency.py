"""Sign latency through the Python bindings, against the server at TESSERA_SERVER_URL.

Registers a device (in-memory storage), makes a 2-of-2 wallet, then signs TESSERA_BENCH_SIGNS
EIP-191 messages one after the other, each the whole SDK call (user-presence callback, keystore
unseal, REST call, protocol over the WebSocket, verification). Prints one JSON line:
{"signs": N, "median_ms": ..., "mean_ms": ..., "p90_ms": ...}.

Run by `cargo bench -p tessera-cli --bench bindings`, which measures the Rust SDK in the same
run against the same server.
"""

import asyncio
import json
import os
import statistics
import time
import uuid

import tessera


class Present(tessera.UserPresence):
    def confirm(self, action):
        return True


async def main():
    url = os.environ["TESSERA_SERVER_URL"]
    signs = int(os.environ.get("TESSERA_BENCH_SIGNS", "20"))
    device = tessera.TesseraDevice(tessera.MemoryStorage(), Present())
    passphrase = "bench passphrase"
    await device.register(url, f"bench-py-{uuid.uuid4()}", "python", passphrase)
    online = await device.connect(passphrase)
    await online.keygen("w", None)
    times = []
    for n in range(signs):
        started = time.perf_counter()
        await online.sign_message("w", f"bench {n}", None)
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    print(
        json.dumps(
            {
                "signs": signs,
                "median_ms": statistics.median(times),
                "mean_ms": statistics.fmean(times),
                "p90_ms": times[min(len(times) - 1, len(times) * 9 // 10)],
            }
        )
    )


asyncio.run(main())
