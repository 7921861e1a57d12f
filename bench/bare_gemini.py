"""Reference for bench/: the same call as `llmcli ask|stream -p gemini`, in the plainest code.

    python bench/bare_gemini.py ask|stream PROMPT...

Reads GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL from the environment. Prints the answer, or
every text delta the moment it arrives (written and flushed), like llmcli. The client is kept
in a variable: a Client dropped mid-call closes its transport (wire.md §0.7).
"""

import os
import sys

from google import genai
from google.genai import types

client = genai.Client(
    api_key=os.environ["GEMINI_API_KEY"],
    http_options=types.HttpOptions(base_url=os.environ["GOOGLE_GEMINI_BASE_URL"], timeout=60_000),
)
params = {
    "model": "gemini-2.5-flash",
    "contents": " ".join(sys.argv[2:]),
    "config": types.GenerateContentConfig(max_output_tokens=1000),
}
if sys.argv[1] == "stream":
    for chunk in client.models.generate_content_stream(**params):
        if chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
else:
    reply = client.models.generate_content(**params)
    sys.stdout.write(reply.text + "\n")
sys.stdout.flush()
