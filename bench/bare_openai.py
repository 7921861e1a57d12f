"""Reference for bench/: the same call as `llmcli ask|stream -p openai`, in the plainest openai code.

    python bench/bare_openai.py ask|stream PROMPT...

Reads OPENAI_API_KEY and OPENAI_BASE_URL from the environment (the SDK's own lookup for the URL).
Prints the answer, or every delta the moment it arrives (written and flushed), like llmcli.
"""

import os
import sys

import openai

client = openai.OpenAI(api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=60)
params = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": " ".join(sys.argv[2:])}],
    "max_completion_tokens": 1000,
}
if sys.argv[1] == "stream":
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **params
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                sys.stdout.write(choice.delta.content)
                sys.stdout.flush()
    sys.stdout.write("\n")
else:
    reply = client.chat.completions.create(**params)
    sys.stdout.write(reply.choices[0].message.content + "\n")
sys.stdout.flush()
