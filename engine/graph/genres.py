"""Genre words: a fixed vocabulary matched in playlist titles, and the optional ``--genres`` CSV.

Title matching. Each canonical genre has a few spellings (``hip hop``, ``hip-hop``, ``hiphop``,
``rap`` -> ``hip hop``). A spelling matches a lower-cased title as a *whole word*: the characters
either side must not be letters or digits (``"ROCK 2010"`` -> rock, ``"Rockstar"`` -> nothing).
Hyphens and ``&`` are word boundaries, so ``"pop-punk"`` gives pop and punk, and ``"K-Pop"`` gives
k-pop and pop (k-pop is pop). Matching is one regular expression per genre over the whole column
(pyarrow's RE2 or Python's ``re``; the pattern is valid and means the same in both), so the cost is
~40 vectorised passes over the titles, with no loop over playlists.

The ``--genres`` CSV has columns ``artist_name, genres``; ``genres`` is a ``;``- or ``|``-separated
list. Artist names match :attr:`Dataset.artists` ``name`` after trimming and case-folding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import BadInput

# Canonical genre -> spellings (regex fragments, lower case). Order fixes genre numbering.
GENRES: dict[str, tuple[str, ...]] = {
    "rock": ("rock", r"rock n roll", r"rock and roll", r"rock'n'roll"),
    "pop": ("pop",),
    "hip hop": (r"hip[ -]?hop", "rap", "raps"),
    "trap": ("trap",),
    "r&b": (r"r ?& ?b", "rnb", "r and b"),
    "soul": ("soul", "motown"),
    "funk": ("funk", "funky"),
    "disco": ("disco",),
    "jazz": ("jazz", "jazzy"),
    "blues": ("blues", "bluesy"),
    "country": ("country",),
    "bluegrass": ("bluegrass",),
    "folk": ("folk",),
    "indie": ("indie",),
    "alternative": ("alternative",),
    "grunge": ("grunge",),
    "punk": ("punk",),
    "emo": ("emo",),
    "metal": ("metal", "metalcore", "heavy metal"),
    "ska": ("ska",),
    "reggae": ("reggae",),
    "reggaeton": ("reggaet[oó]n",),
    "latin": ("latin", "latino", "latina", "salsa", "bachata", "cumbia"),
    "k-pop": (r"k-?pop", "k pop"),
    "j-pop": (r"j-?pop", "j pop"),
    "afrobeat": ("afrobeats?", "afro beats?"),
    "electronic": ("edm", "electronic", "electronica", "electro", "house", "techno", "trance"),
    "dubstep": ("dubstep",),
    "drum and bass": ("dnb", r"drum ?(?:and|n|&) ?bass"),
    "dance": ("dance",),
    "ambient": ("ambient",),
    "lofi": (r"lo-?fi", "lo fi"),
    "chill": ("chill", "chilled", "chillout", "chill out", "chillin", "chilling"),
    "acoustic": ("acoustic",),
    "piano": ("piano",),
    "instrumental": ("instrumental",),
    "classical": ("classical", "orchestral"),
    "soundtrack": ("soundtrack", "soundtracks", "ost"),
    "oldies": ("oldies",),
    "christian": ("worship", "christian", "praise"),
    "gospel": ("gospel",),
}
GENRE_NAMES: list[str] = list(GENRES)

# A word boundary that works identically in RE2 and Python ``re``: not a (Latin) letter or digit.
_NOT_WORD = "[^0-9a-zà-ɏ]"


def genre_pattern(genre: str) -> str:
    """The whole-word pattern of one canonical genre (for lower-cased text)."""
    return f"(?:^|{_NOT_WORD})(?:{'|'.join(GENRES[genre])})(?:{_NOT_WORD}|$)"


def title_genres(names: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Genres named in each title.

    Returns ``(genre_names, owner_idx, genre_idx)``: ``genre_names`` are the canonical genres that
    match at least one title (in :data:`GENRE_NAMES` order); each pair ``(owner_idx[k],
    genre_idx[k])`` says title at *position* ``owner_idx[k]`` of ``names`` names genre
    ``genre_names[genre_idx[k]]``. Pairs are unique and sorted by (owner, genre). Missing titles
    match nothing.
    """
    lower = names.reset_index(drop=True).fillna("").astype(str).str.lower()
    found: list[str] = []
    owners: list[np.ndarray] = []
    genres: list[np.ndarray] = []
    for genre in GENRE_NAMES:  # ~40 vectorised passes; never a loop over titles
        hit = np.flatnonzero(lower.str.contains(genre_pattern(genre), regex=True).to_numpy(bool))
        if len(hit):
            owners.append(hit.astype(np.int64))
            genres.append(np.full(len(hit), len(found), dtype=np.int64))
            found.append(genre)
    if not found:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner_idx, genre_idx = np.concatenate(owners), np.concatenate(genres)
    order = np.lexsort((genre_idx, owner_idx))
    return found, owner_idx[order], genre_idx[order]


def canonical_genre_map(raw: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Map free-form genre strings (e.g. Spotify's ``"dance pop"``) onto genre names.

    A string that names vocabulary genres maps to all of them (``"pop rap"`` -> pop, hip hop); a
    string that names none keeps itself, trimmed and lower-cased (``"shoegaze"``), so nothing is
    lost. Returns ``(names, raw_idx, name_idx)``: pairs (position in ``raw``, index into
    ``names``); ``names`` lists the vocabulary genres found first, then the leftovers sorted.
    """
    raw = raw.reset_index(drop=True).fillna("").astype(str)
    vocab, r_idx, v_idx = title_genres(raw)
    rest = np.setdiff1d(np.arange(len(raw)), r_idx)
    clean = raw.iloc[rest].str.strip().str.lower().str.split().str.join(" ").to_numpy(object)
    keep = clean != ""
    rest, clean = rest[keep], clean[keep]
    extra, inv = np.unique(clean.astype(str), return_inverse=True)
    names = vocab + extra.tolist()
    raw_idx = np.concatenate([r_idx, rest]).astype(np.int64)
    name_idx = np.concatenate([v_idx, len(vocab) + inv.reshape(-1)]).astype(np.int64)
    return names, raw_idx, name_idx


def read_artist_genres_csv(path: str | Path, artists_df: pd.DataFrame) -> pd.DataFrame:
    """Read the optional ``--genres`` CSV into artist -> genre pairs.

    ``path`` has a header with ``artist_name`` and ``genres`` (extra columns are ignored);
    ``genres`` is a ``;``- or ``|``-separated list. Returns a DataFrame ``artist_id:int32,
    genre:str`` (genre trimmed, lower-cased, inner whitespace collapsed), one row per distinct
    pair, sorted. Rows whose artist is not in ``artists_df`` are dropped; ``result.attrs`` holds
    ``rows``, ``matched_rows`` and ``artists_matched`` for the log. BadInput on a missing or
    unreadable file or a wrong header.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: genres file not found")
    try:
        table = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BadInput(f"{p}: unreadable genres CSV ({exc})") from None
    cols = {c.strip().lower(): c for c in table.columns}
    if "artist_name" not in cols or "genres" not in cols:
        raise BadInput(
            f"{p}: line 1: header must have columns artist_name and genres, got {list(table.columns)}"
        )
    names = table[cols["artist_name"]].astype(str).str.strip().str.casefold()
    genres = table[cols["genres"]].astype(str)

    # One row per (CSV row, genre word): split on ';' or '|', explode, clean.
    pairs = pd.DataFrame({"key": names, "genre": genres.str.split(r"[;|]", regex=True)})
    pairs = pairs.explode("genre", ignore_index=True)
    pairs["genre"] = pairs["genre"].fillna("").str.strip().str.lower().str.split().str.join(" ")
    pairs = pairs[pairs["genre"] != ""]

    artists = pd.DataFrame({
        "artist_id": artists_df["artist_id"].to_numpy(np.int32),
        "key": artists_df["name"].fillna("").astype(str).str.strip().str.casefold(),
    })
    merged = pairs.merge(artists, on="key", how="inner")[["artist_id", "genre"]]
    out = merged.drop_duplicates().sort_values(["artist_id", "genre"], ignore_index=True)
    out["artist_id"] = out["artist_id"].astype(np.int32)
    out["genre"] = out["genre"].astype(str)
    out.attrs.update(rows=len(table), matched_rows=int(names.isin(artists["key"]).sum()),
                     artists_matched=int(out["artist_id"].nunique()))
    return out
