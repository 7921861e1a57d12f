"""Reference for bench/: the same call as `llmcli ask|stream -p anthropic`, in the plainest code.

    python bench/bare_anthropic.py ask|stream PROMPT...

Reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment (the SDK's own lookup for
the URL). Prints the answer, or every text delta the moment it arrives (flushed), like llmcli.
"""

import os
import sys

import anthropic

client = anthropic.Anthropic(api_key=os.environ["ANTHROPIC_API_KEY"], max_retries=0, timeout=60)
params = {
    "model": "claude-haiku-4-5",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": " ".join(sys.argv[2:])}],
}
if sys.argv[1] == "stream":
    for event in client.messages.create(stream=True, **params):
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            sys.stdout.write(event.delta.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
else:
    reply = client.messages.create(**params)
    sys.stdout.write("".join(b.text for b in reply.content if b.type == "text") + "\n")
sys.stdout.flush()
