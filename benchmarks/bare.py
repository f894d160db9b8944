"""
The ceiling: the least work a client can do per row. One aiohttp session, the
request bytes built once, answers parsed and dropped; no SDK, no retries, no
results file. What it reaches is what this machine and simulator allow any
client at this concurrency. Prints its own send-phase figures.

    python benchmarks/bare.py INPUT.jsonl CONCURRENCY
"""

import asyncio
import json
import os
import sys
import time

import aiohttp


async def main(prompts: list[str], concurrency: int) -> None:
    url = (
        f"{os.environ['AZURE_OPENAI_ENDPOINT']}/openai/deployments/"
        f"{os.environ['AZURE_OPENAI_DEPLOYMENT']}/chat/completions"
        "?api-version=2024-10-21"
    )
    headers = {
        "api-key": os.environ["AZURE_OPENAI_API_KEY"],
        "Content-Type": "application/json",
    }
    pending = iter(prompts)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for prompt in pending:
                body = json.dumps({"messages": [{"role": "user", "content": prompt}]})
                async with session.post(url, data=body, headers=headers) as answer:
                    json.loads(await answer.read())

        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu_used = time.monotonic() - started, time.process_time() - cpu
    print(
        json.dumps(
            {"rows": len(prompts), "send_seconds": elapsed, "send_cpu": cpu_used}
        )
    )


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as lines:
        prompts = [json.loads(line)["prompt"] for line in lines]
    asyncio.run(main(prompts, int(sys.argv[2])))
