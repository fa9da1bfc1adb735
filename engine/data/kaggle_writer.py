"""Synthetic Kaggle "Spotify Playlists" CSVs (:func:`write_kaggle_csv`) on the shared catalogue.

Playlists add owners with a taste of 2-4 genres, playlists that draw mostly from 1-3 of those
genres and a handful of "anchor" artists, and titles that often name the playlist's main genre.
The catalogue (genres, artists, songs and their popularities) is :mod:`engine.data.catalogue`'s.
Everything is drawn from ``numpy.random.default_rng(seed)`` (or streams derived from the seed), and
nothing reads the clock, so the same arguments always give byte-identical files.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.catalogue import (
    GENRES,
    Catalogue,
    Rng,
    artist_names,
    build_catalogue,
    check_positive,
    segment_offsets,
    taste_genres,
    taste_sampler,
    track_names,
)
from engine.errors import BadInput

# The original header has a space after each comma; its data lines do not.
KAGGLE_HEADER = '"user_id", "artistname", "trackname", "playlistname"\n'
PLAYLIST_LEN_MEDIAN = 30    # rows per playlist: log-normal, so a long tail of huge playlists
PLAYLIST_LEN_SIGMA = 1.3
PLAYLIST_LEN_MAX = 5000
PLAYLISTS_PER_USER_MEDIAN = 6
PLAYLIST_GENRES_P = (0.45, 0.35, 0.20)   # P(a playlist draws on 1, 2, 3 of its owner's genres)
OWNER_TASTE_SHARE = 0.9     # share of a playlist's genres from the owner's taste
ANCHOR_P = 0.45             # share of rows from the playlist's anchor artists
PLAYLIST_GENRE_P = 0.45     # share of rows from the playlist's genres; the rest: global hits
DEDUPE_ROUNDS = 8           # redraws of a track already in the playlist
GENRE_TITLE_P = 0.6         # share of playlists whose title names their main genre

# Words a playlist title uses for a genre (default: the genre's own name).
_TITLE_WORDS: dict[str, tuple[str, ...]] = {
    "hip hop": ("hip hop", "hip-hop", "rap"), "r&b": ("r&b", "rnb", "soul & r&b"),
    "electronic": ("electronic", "electro"), "edm": ("edm", "festival"),
    "ambient": ("chill", "ambient", "chillout"), "lo-fi": ("lofi", "chill", "lo-fi beats"),
    "singer-songwriter": ("acoustic", "singer-songwriter"), "classical": ("classical", "piano"),
    "alternative": ("alternative", "alt rock"), "dance": ("dance", "club"),
    "latin": ("latin", "reggaeton"), "metal": ("metal", "heavy metal"),
}
_GENRE_TITLES = (
    ("", ""), ("", " 2010"), ("", " 2011"), ("", " 2012"), ("", " 2013"), ("", " mix"),
    ("My ", ""), ("Best of ", ""), ("", " favourites"), ("", " classics"), ("", " vibes"),
    ("", " playlist"), ("Summer ", ""), ("", " for work"), ("Old ", ""), ("New ", ""),
    ("", " hits"), ("", " essentials"), ("", " love"), ("Good ", ""),
)
_GENERIC_TITLES = (
    "Starred", "Liked from Radio", "Favorites", "Road Trip", "Workout", "Party", "Sleep",
    "Running", "Sunday Morning", "Study", "Car", "Wedding", "Christmas", "New Music",
    "Good Stuff", "Summer 2012", "Mix", "Gym", "Rainy Days", "Love, Actually", "\"Best\" Songs",
    "Dinner", "Throwbacks", "Random", "On Repeat", "Morning", "Late Night", "Cooking",
)


@dataclass
class _Playlists:
    """Playlist-level draws, in file (emission) order."""

    user: np.ndarray          # (P,) owner index, non-decreasing
    length: np.ndarray        # (P,) rows
    genres: np.ndarray        # (P, 3) genre ids; the first n_genres columns are used
    n_genres: np.ndarray      # (P,)
    anchor_start: np.ndarray  # (P,) offset into anchors
    n_anchors: np.ndarray     # (P,)
    anchors: np.ndarray       # flat anchor artist ids
    title: pa.Array           # (P,) playlist names (unique within a user)


def _heavy_tailed_counts(total: int, median: float, sigma: float, cap: int,
                         rng: Rng) -> np.ndarray:
    """Log-normal counts (>= 1) that add up to exactly ``total``; the last one is cut short."""
    mean = median * math.exp(sigma**2 / 2)
    parts = []
    drawn = 0
    while drawn < total:                      # one pass almost always; a loop over batches
        batch = np.clip(np.ceil(rng.lognormal(math.log(median), sigma,
                                              size=int(total / mean * 1.2) + 16)), 1, cap)
        parts.append(batch.astype(np.int64))
        drawn += int(batch.sum())
    counts = np.concatenate(parts)
    cum = np.cumsum(counts)
    n = int(np.searchsorted(cum, total)) + 1
    counts = counts[:n]
    counts[-1] -= int(cum[n - 1]) - total
    return counts


def _title_words() -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Flattened per-genre title words: (start, count) per genre and the words."""
    words = [_TITLE_WORDS.get(g, (g,)) for g in GENRES]
    counts = np.array([len(w) for w in words])
    flat = pa.array([w for ws in words for w in ws])
    return segment_offsets(counts), counts, flat


def _playlist_titles(genre: np.ndarray, user: np.ndarray, rng: Rng) -> pa.Array:
    """Titles naming the main genre ("indie vibes", "HIP HOP 2012") or generic ("Road Trip"),
    in mixed case, made unique within each owner with a " 2", " 3" suffix."""
    n = len(genre)
    start, count, words = _title_words()
    word = words.take(pa.array(start[genre] + rng.integers(0, count[genre])))
    pattern = rng.integers(len(_GENRE_TITLES), size=n)
    pre = pa.array([p for p, _ in _GENRE_TITLES]).take(pa.array(pattern))
    post = pa.array([s for _, s in _GENRE_TITLES]).take(pa.array(pattern))
    genre_title = pc.binary_join_element_wise(pre, word, post, "")
    generic = pa.array(_GENERIC_TITLES).take(pa.array(rng.integers(len(_GENERIC_TITLES), size=n)))
    title = pc.if_else(pa.array(rng.random(n) < GENRE_TITLE_P), genre_title, generic)
    case = rng.random(n)
    title = pc.if_else(pa.array(case < 0.2), pc.utf8_upper(title),
                       pc.if_else(pa.array(case < 0.55), pc.utf8_lower(title),
                                  pc.utf8_title(title)))
    frame = pd.DataFrame({"user": user, "title": title.to_numpy(zero_copy_only=False)})
    dup = frame.groupby(["user", "title"], sort=False).cumcount().to_numpy()
    suffix = pa.array(np.where(dup > 0, np.char.add(" ", (dup + 1).astype(str)), ""))
    return pc.binary_join_element_wise(title, suffix, "")


def _genre_column(n_genres: np.ndarray, rng: Rng) -> np.ndarray:
    """Which of a playlist's genres a draw uses, favouring the first (the one its title names):
    about 65/35 % with two genres, 50/27/23 % with three."""
    return np.minimum((rng.random(len(n_genres)) ** 1.6 * n_genres).astype(np.int64),
                      n_genres - 1)


def _draw_playlists(rows: int, cat: Catalogue, rng: Rng) -> _Playlists:
    """Owners, playlist lengths, genres, anchor artists and titles, in file order."""
    # A tiny catalogue caps playlist length too, or long playlists would be mostly repeats.
    cap = min(rows, PLAYLIST_LEN_MAX, max(10, len(cat.track_pop) // 5))
    length = _heavy_tailed_counts(rows, PLAYLIST_LEN_MEDIAN, PLAYLIST_LEN_SIGMA, cap, rng)
    per_user = _heavy_tailed_counts(len(length), PLAYLISTS_PER_USER_MEDIAN, 1.0, 500, rng)
    n_users = len(per_user)
    user = np.repeat(np.arange(n_users), per_user)
    rank, mask = taste_genres(n_users, rng.integers(2, 5, size=n_users), cat, rng)
    taste = taste_sampler(rank, mask, cat, OWNER_TASTE_SHARE)
    n_pl = len(length)
    n_genres = rng.choice(3, size=n_pl, p=PLAYLIST_GENRES_P) + 1
    genres = taste.sample(np.repeat(user, 3), rng).reshape(n_pl, 3)
    # Longer playlists lean on more anchor artists, as real ones do.
    n_anchors = np.clip(np.round(length / 6), 2, 25).astype(np.int64)
    anchor_pl = np.repeat(np.arange(n_pl), n_anchors)
    col = _genre_column(n_genres[anchor_pl], rng)
    anchors = cat.genre_artists.sample(genres[anchor_pl, col], rng)
    title = _playlist_titles(genres[:, 0], user, rng)
    # File order: owners in turn, each owner's playlists by title (the key a dump would sort on).
    title_rank = np.argsort(pc.sort_indices(title).to_numpy())
    order = np.lexsort((title_rank, user))
    anchor_start = segment_offsets(n_anchors)
    return _Playlists(user[order], length, genres[order], n_genres[order], anchor_start[order],
                      n_anchors[order], anchors, title.take(pa.array(order)))


def _user_hex_ids(n: int, rng: Rng) -> pa.Array:
    """32-hex-digit owner ids like the original's md5 strings."""
    table = np.array([f"{i:02x}" for i in range(256)], dtype="S2")
    raw = np.ascontiguousarray(table[rng.integers(0, 256, size=(n, 16))])
    return pa.array(raw.view("S32").ravel()).cast(pa.string())


def _quoted(arr: pa.Array) -> pa.Array:
    """CSV-escape a field: double every quote (the caller adds the surrounding quotes)."""
    return pc.replace_substring(arr, '"', '""')


@dataclass
class _KaggleText:
    """Pre-built pieces of a CSV line: ``prefix[playlist] + middle[track] + suffix[playlist]``."""

    prefix: pa.Array      # "user_id","
    middle: pa.Array      # artist","track
    suffix: pa.Array      # ","playlist"\n
    name_rank: np.ndarray  # each track's position in (track name, artist name) order


def _kaggle_text(cat: Catalogue, pls: _Playlists, rng: Rng) -> _KaggleText:
    num_artists = len(cat.artist_pop)
    artist = artist_names(num_artists, rng)
    track = track_names(cat.track_artist, num_artists, rng)
    track_artist = artist.take(pa.array(cat.track_artist))
    middle = pc.binary_join_element_wise(_quoted(track_artist), _quoted(track), '","')
    by_name = pc.sort_indices(pa.table({"t": track, "a": track_artist}),
                              sort_keys=[("t", "ascending"), ("a", "ascending")])
    name_rank = np.empty(len(track), dtype=np.int64)
    name_rank[by_name.to_numpy()] = np.arange(len(track))
    uid = _user_hex_ids(int(pls.user.max()) + 1, rng).take(pa.array(pls.user))
    prefix = pc.binary_join_element_wise(pa.scalar('"'), uid, pa.scalar('","'), "")
    suffix = pc.binary_join_element_wise(pa.scalar('","'), _quoted(pls.title),
                                         pa.scalar('"\n'), "")
    return _KaggleText(prefix, middle, suffix, name_rank)


def _draw_rows(cat: Catalogue, pls: _Playlists, pl: np.ndarray, anchor_p: float,
               rng: Rng) -> np.ndarray:
    """One track per row: from an anchor artist, from one of the playlist's genres, or a global
    hit (genre by popularity), then a song of the chosen artist by popularity."""
    n = len(pl)
    source = rng.random(n)
    anchor = pls.anchors[pls.anchor_start[pl] + rng.integers(0, pls.n_anchors[pl])]
    pl_genre = pls.genres[pl, _genre_column(pls.n_genres[pl], rng)]
    ok = np.where(cat.genre_ok, cat.genre_pop, 0.0)
    hit_genre = rng.choice(len(GENRES), size=n, p=ok / ok.sum())
    genre = np.where(source < anchor_p + PLAYLIST_GENRE_P, pl_genre, hit_genre)
    artist = anchor
    by_genre = source >= anchor_p
    artist[by_genre] = cat.genre_artists.sample(genre[by_genre], rng)
    return cat.artist_tracks.sample(artist, rng)


def _repeats(pl: np.ndarray, track: np.ndarray, num_tracks: int) -> np.ndarray:
    """Rows whose track already appeared earlier in the same playlist."""
    key = (pl - pl.min(initial=0)).astype(np.int64) * num_tracks + track
    order = np.argsort(key, kind="stable")      # one int64 sort is much faster than a lexsort
    again = np.zeros(len(pl), dtype=bool)
    again[order[1:]] = key[order[1:]] == key[order[:-1]]
    return again


def _chunk_tracks(cat: Catalogue, pls: _Playlists, pl: np.ndarray, rng: Rng) -> np.ndarray:
    """Tracks for a chunk's rows, redrawing repeats a few rounds: a playlist rarely lists a song
    twice. Each round leans less on the anchor artists, whose few hits are what runs out; the
    repeats left after the last round stay, as in the real file."""
    track = _draw_rows(cat, pls, pl, ANCHOR_P, rng)
    rows = np.arange(len(pl))                 # rows of playlists that may still hold repeats
    for r in range(1, DEDUPE_ROUNDS + 1):     # a handful of rounds over the remaining repeats
        again = rows[_repeats(pl[rows], track[rows], len(cat.track_pop))]
        if not len(again):
            break
        track[again] = _draw_rows(cat, pls, pl[again], ANCHOR_P / 2**r, rng)
        rows = rows[np.isin(pl[rows], pl[again])]
    return track


def _string_bytes(arr: pa.Array) -> pa.Buffer:
    """The concatenated characters of a string array, straight from its data buffer."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    return arr.buffers()[2][int(offsets[0]):int(offsets[-1])]


def _chunks(length: np.ndarray, chunk_rows: int) -> list[tuple[int, int]]:
    """Runs of whole playlists holding about ``chunk_rows`` rows each."""
    cum = np.cumsum(length)
    bounds, i = [], 0
    while i < len(length):                    # a loop over chunks, not rows
        before = int(cum[i - 1]) if i else 0
        j = max(int(np.searchsorted(cum, before + chunk_rows, side="right")), i + 1)
        bounds.append((i, j))
        i = j
    return bounds


def default_catalogue_size(rows: int) -> int:
    """Catalogue tracks for a file of ``rows`` rows: about 2.5 M at the original's 12.9 M rows
    (of which ~2 M get used, as in the original), shrinking sub-linearly so that smaller files
    keep a similar share of repeated tracks. Artists default to a seventh of the tracks."""
    return max(100, int(rows**0.9))


def write_kaggle_csv(
    path: str | Path,
    rows: int,
    seed: int = 0,
    *,
    num_tracks: int | None = None,
    num_artists: int | None = None,
    chunk_rows: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write a synthetic Kaggle "Spotify Playlists" ``spotify_dataset.csv`` of exactly ``rows``
    data rows, atomically (temporary sibling file, then rename), and return its figures.

    Format as in the original: header ``"user_id", "artistname", "trackname", "playlistname"``,
    every field double-quoted, comma separated, quotes inside fields doubled; an owner's rows are
    contiguous, each playlist's rows contiguous and sorted by track name.

    Model: owners have a taste of 2-4 genres and a heavy-tailed number of playlists; playlists have
    heavy-tailed lengths (median ~30 rows, some thousands), draw on 1-3 of the owner's genres and a
    few anchor artists (:data:`ANCHOR_P` of rows from anchors, :data:`PLAYLIST_GENRE_P` from the
    playlist's genres, the rest global hits), and are often titled after their main genre. Rows are
    generated and written in chunks of about ``chunk_rows`` rows, so memory is bounded by the
    catalogue, not the file. The same (rows, seed, sizes, chunk_rows) give byte-identical files.

    ``progress`` is called with the number of rows written after each chunk.
    """
    check_positive(rows=rows, chunk_rows=chunk_rows)
    num_tracks = int(num_tracks or default_catalogue_size(rows))
    num_artists = int(num_artists or min(num_tracks, max(10, num_tracks // 7)))
    check_positive(num_tracks=num_tracks, num_artists=num_artists)
    rng = np.random.default_rng(seed)
    cat = build_catalogue(num_tracks, num_artists, rng)
    pls = _draw_playlists(rows, cat, rng)
    text = _kaggle_text(cat, pls, rng)
    target = Path(path)
    used = np.zeros(num_tracks, dtype=bool)
    duplicates = 0
    fd, tmp = _temp_sibling(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(KAGGLE_HEADER.encode())
            for k, (i, j) in enumerate(_chunks(pls.length, chunk_rows)):
                chunk_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, k)))
                pl = np.repeat(np.arange(i, j), pls.length[i:j])
                track = _chunk_tracks(cat, pls, pl, chunk_rng)
                order = np.lexsort((text.name_rank[track], pl))
                pl, track = pl[order], track[order]
                used[track] = True
                duplicates += int(((pl[1:] == pl[:-1]) & (track[1:] == track[:-1])).sum())
                lines = pc.binary_join_element_wise(
                    text.prefix.take(pa.array(pl)), text.middle.take(pa.array(track)),
                    text.suffix.take(pa.array(pl)), "")
                f.write(_string_bytes(lines))
                if progress is not None:
                    progress(len(pl))
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BadInput(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "path": str(target), "rows": int(rows), "users": int(pls.user.max()) + 1,
        "playlists": len(pls.length), "tracks": int(used.sum()),
        "artists": int(np.unique(cat.track_artist[used]).size),
        "catalogue_tracks": num_tracks, "catalogue_artists": num_artists,
        "duplicate_rows": duplicates, "seed": int(seed),
    }


def _temp_sibling(target: Path) -> tuple[int, str]:
    """A temporary file next to ``target`` (same filesystem, so the final rename is atomic)."""
    if target.is_dir():
        raise BadInput(f"{target}: is a folder; give a file name such as spotify_dataset.csv")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)         # mkstemp makes 0600; give the file normal mode
        return fd, tmp
    except OSError as exc:
        raise BadInput(f"{target}: cannot write ({exc.strerror or exc})") from None
