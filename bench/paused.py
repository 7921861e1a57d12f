"""Run a bench/bare_*.py script with the garbage collector paused as llmcli pauses it.

    python bench/paused.py bench/bare_openai.py stream PROMPT...

llmcli's entry point (llmcli/startup.py) stops the collector until the first bytes of the answer
are written, then freezes what start-up made and collects again. The bare scripts do not, so
beside them llmcli's start-up looks cheaper than its own code is. This reference does the same
pause around the same bare script, so `llmcli − this` is llmcli's own start-up (Click, its
modules, settings), with the collector's share taken out on both sides.
"""

import gc
import sys

gc.disable()


class _SettleOnFirstWrite:
    """stdout, resuming the collector (after freezing start-up's objects) at the first write."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        sys.stdout = self._stream
        gc.freeze()
        gc.enable()
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.stdout = _SettleOnFirstWrite(sys.stdout)
with open(script) as source:
    code = compile(source.read(), script, "exec")
exec(code, {"__name__": "__main__", "__file__": script})
