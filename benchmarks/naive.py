"""
The baseline: what a data team writes first. asyncio.gather + a Semaphore over
the official SDK, results written at the end. Prints its own send-phase figures.

    python benchmarks/naive.py INPUT.jsonl OUTPUT.jsonl CONCURRENCY [MAX_TOKENS]
"""

import asyncio
import json
import os
import sys
import time
from typing import Any

from openai import AsyncAzureOpenAI


async def main(source: str, target: str, concurrency: int, max_tokens: int) -> None:
    rows = [json.loads(line) for line in open(source, encoding="utf-8")]
    client = AsyncAzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
        api_key=os.environ["AZURE_OPENAI_API_KEY"],
        api_version="2024-10-21",
    )
    limit = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            try:
                answer = await client.chat.completions.create(
                    model=os.environ["AZURE_OPENAI_DEPLOYMENT"],
                    messages=[{"role": "user", "content": row["prompt"]}],
                    max_tokens=max_tokens or None,
                )
                text = answer.choices[0].message.content
                return {
                    "id": row["id"],
                    "output": text,
                    "usage": answer.usage and answer.usage.model_dump(),
                }
            except Exception as exc:
                return {"id": row["id"], "error": str(exc)}

    started, cpu = time.monotonic(), time.process_time()
    results = await asyncio.gather(*(one(row) for row in rows))
    elapsed, cpu_used = time.monotonic() - started, time.process_time() - cpu
    with open(target, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in results)
    print(
        json.dumps({"rows": len(rows), "send_seconds": elapsed, "send_cpu": cpu_used})
    )


if __name__ == "__main__":
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), max_tokens))
