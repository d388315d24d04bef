"""Progress bars for long loops, which the book's build turns off."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, desc: str):
    """A progress bar for long loops; TQDM_DISABLE=1 turns it off (the book's build does, so that executed pages
    hold no bars: tqdm's notebook bars ignore that variable on their own)."""
    return tqdm(iterable, desc=desc, leave=False, disable=os.environ.get("TQDM_DISABLE", "") not in ("", "0"))
