"""corral from Python, as in a notebook: submit prompts, wait, read the answers and the cost.

Run it where `corral worker` processes (or `corral run`'s) serve the config's models, with
corral.toml in the current directory or named by $CORRAL_CONFIG.
"""

from corral import Client

client = Client()  # finds corral.toml, Redis and the record store as the CLI does

prompts = [
    "Summarize in one line: the quick brown fox jumps over the lazy dog.",
    "Prove that the square root of 2 is irrational.",
    "Write a haiku about rate limits.",
]
# Bare chat bodies get the custom_ids request-0, request-1, … in order; full batch lines
# ({"custom_id", "method", "url", "body"}) and JSONL paths are taken too.
batch = client.submit({"model": "auto", "messages": [{"role": "user", "content": prompt}]}
                      for prompt in prompts)
print(f"submitted {batch.id}")

final = batch.wait(progress=True)  # the batch object once it has ended
print(f"{final['status']}: {final['request_counts']}")

for result in batch.results(order="input"):
    if not result.ok:
        print(f"{result.custom_id} failed: {result.error}")
        continue
    completion = result.completion  # the openai SDK's ChatCompletion
    tokens = completion.usage.total_tokens if completion.usage else 0
    print(f"{result.custom_id} [{completion.model}, {tokens} tokens]: {result.text}")

cost = batch.cost()
print(f"total cost: ${cost['total']['cost_usd']}")
