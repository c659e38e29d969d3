"""What a tenant's job indexes (``imagegen.store.job_index``) cost per job: Redis memory, Redis
CPU and wall time of filing, on a private Redis, one job per submission (the costliest way),
with prompts of about nine searchable words.

    python -m tests.bench.index_cost [jobs]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from imagegen.ids import new_job_id
from imagegen.store.job_index import FiledJob, JobIndex
from imagegen.store.prompt_words import words
from tests.bench.whole_job import _PrivateRedis

PROMPTS = (
    "A lighthouse keeper waiting for the dawn over a stormy northern sea",
    "Neon koi fish circling at night in a quiet temple pond",
    "portrait of an old sailor, oil painting, dramatic light",
)
MODEL = "stability.stable-image-core-v1:0"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    count = int(args[0]) if args else 5_000
    with (
        tempfile.TemporaryDirectory(prefix="bench-index-") as path,
        _PrivateRedis("index", Path(path)) as server,
    ):
        client = server.client
        index = JobIndex(client, 7 * 86400)
        now_ms = int(time.time() * 1000)
        jobs = [
            FiledJob(new_job_id(), "acme", MODEL, now_ms + i, f"{PROMPTS[i % 3]} v{i % 50}")
            for i in range(count)
        ]
        before_memory = int(client.info("memory")["used_memory"])
        start = server.reading()
        started = time.perf_counter()
        for job in jobs:
            index.file_new([job])
        wall_s = time.perf_counter() - started
        end = server.reading()
        memory = int(client.info("memory")["used_memory"]) - before_memory
    per_job_words = sum(len(words(job.prompt)) for job in jobs) / count
    cpu_us = (end.cpu_s - start.cpu_s) * 1e6 / count
    print(f"{count:,} jobs filed one per submission, {per_job_words:.1f} words per prompt")
    print(f"Redis memory: {memory / count:,.0f} bytes per job ({memory / 1e6:.2f} MB in all)")
    print(f"Redis CPU: {cpu_us:.0f} us per job")
    print(f"wall time: {wall_s * 1e6 / count:.0f} us per job (one pipelined round trip)")


if __name__ == "__main__":
    main()
