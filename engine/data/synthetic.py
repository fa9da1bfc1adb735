"""Synthetic music data: listening sessions (canonical ``kind="session"``) and Kaggle playlist CSVs.

Both generators share one model of a music catalogue:

* **Genres** (35 real names) have Zipf popularity: the r-th genre is played about ``r**-1`` as
  often as the first, so a few genres dominate and a long tail is rarely heard.
* **Artists** have Pareto popularity (a few stars, many niche acts) and belong to 1-3 genres.
* **Songs** belong to one artist. A song's popularity is its artist's popularity times a Zipf
  factor over the song's rank inside the artist's catalogue (every artist has a few hits), with a
  little log-normal noise. Every draw below is hierarchical -- genre, then artist within the genre,
  then song within the artist -- so the marginal song popularity is heavy-tailed, and songs of one
  artist, and artists of one genre, are listened to together: the co-occurrence structure that
  collaborative filtering and a genre-aware model can learn from.

Listening sessions (:func:`generate_sessions`) add users of three types (casual, regular, power)
that differ in activity, breadth of taste, session length and skipping; see :data:`USER_TYPES`.

Playlists (:func:`write_kaggle_csv`) add owners with a taste of 2-4 genres, playlists that draw
mostly from 1-3 of those genres and a handful of "anchor" artists, and titles that often name the
playlist's main genre.

Everything is drawn from ``numpy.random.default_rng(seed)`` (or streams derived from the seed), and
nothing reads the clock, so the same arguments always give byte-identical output.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.canonical import Dataset
from engine.errors import BadInput

Rng = np.random.Generator

# Roughly in order of real-world streaming popularity: rank 1 is the most played under Zipf.
GENRES: tuple[str, ...] = (
    "pop", "rock", "hip hop", "electronic", "r&b", "indie", "country", "latin", "dance",
    "alternative", "metal", "jazz", "classical", "folk", "soul", "punk", "reggae", "blues",
    "house", "techno", "k-pop", "funk", "singer-songwriter", "ambient", "trap", "edm", "gospel",
    "disco", "grunge", "ska", "lo-fi", "afrobeats", "bossa nova", "emo", "world",
)
GENRE_ZIPF = 1.0            # genre popularity ~ rank ** -GENRE_ZIPF
ARTIST_PARETO = 1.2         # shape of artist popularity: smaller = more star-dominated
SONG_ZIPF = 0.9             # popularity of an artist's r-th song ~ r ** -SONG_ZIPF
GENRES_PER_ARTIST_P = (0.55, 0.30, 0.15)   # P(an artist has 1, 2, 3 genres)


# ------------------------------------------------------------------------------------------------
# Sampling helper
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupedSampler:
    """Draw one item per query from a per-group categorical distribution, vectorised.

    Items are sorted by group and each group's normalised cumulative weights are stored shifted by
    the group number, so group ``g`` owns the interval ``(g, g + 1]`` of one global sorted array:
    a draw for group ``g`` is a single ``searchsorted`` of ``g + u`` with ``u ~ U[0, 1)``. This
    replaces a Python loop over groups (users, genres, artists) with one O(n log m) call.
    """

    cum: np.ndarray     # float64, non-decreasing
    items: np.ndarray   # item ids in the same order as cum
    start: np.ndarray   # first position of each group
    stop: np.ndarray    # one past the last position of each group
    total: np.ndarray   # each group's total weight (0 marks a group that cannot be drawn)

    @classmethod
    def build(
        cls, groups: np.ndarray, items: np.ndarray, weights: np.ndarray, num_groups: int
    ) -> GroupedSampler:
        """Sampler for ``items[i]`` in group ``groups[i]`` with relative weight ``weights[i]``."""
        order = np.lexsort((items, groups))
        g, w = groups[order], weights[order].astype(np.float64)
        counts = np.bincount(g, minlength=num_groups)
        total = np.bincount(g, weights=w, minlength=num_groups)
        stop = np.cumsum(counts)
        start = stop - counts
        cs = np.cumsum(w)
        base = np.concatenate(([0.0], cs))[start]        # cumulative weight before each group
        norm = (cs - base[g]) / np.where(total > 0, total, 1.0)[g]
        return cls(g + norm, items[order], start, stop, total)

    def sample(self, group_ids: np.ndarray, rng: Rng) -> np.ndarray:
        """One item per entry of ``group_ids``, drawn by weight within that group."""
        group_ids = np.asarray(group_ids, dtype=np.int64)
        if len(group_ids) and not (self.total[group_ids] > 0).all():
            raise ValueError("sampling from a group without positive weight")
        pos = np.searchsorted(self.cum, group_ids + rng.random(len(group_ids)), side="right")
        # Float rounding at a group's edge can land one slot outside it; clamp back in.
        pos = np.clip(pos, self.start[group_ids], self.stop[group_ids] - 1)
        return self.items[pos]


def _forward_fill_index(fresh: np.ndarray) -> np.ndarray:
    """For each position, the index of the latest position ``<=`` it where ``fresh`` is True.

    Used to carry a draw (genre, artist) forward through a session until the next fresh draw;
    ``fresh`` is True at every session start, so nothing leaks across sessions.
    """
    idx = np.where(fresh, np.arange(len(fresh)), 0)
    return np.maximum.accumulate(idx) if len(idx) else idx


def _segment_offsets(lengths: np.ndarray) -> np.ndarray:
    """Start position of each segment in the flattened array."""
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def _gumbel_top_k(
    log_w: np.ndarray, k: np.ndarray, rng: Rng
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``k[row]`` columns drawn without replacement with probability ~ ``exp(log_w)``.

    The Gumbel-max trick: ranking ``log_w + Gumbel noise`` gives weighted sampling without
    replacement for every row at once. Returns ``(rank, mask)``: each column's draw rank (0 =
    drawn first) and the mask of the ``k`` columns drawn.
    """
    keys = log_w + rng.gumbel(size=log_w.shape)
    ranks = np.argsort(np.argsort(-keys, axis=1, kind="stable"), axis=1, kind="stable")
    return ranks, ranks < k[:, None]


# ------------------------------------------------------------------------------------------------
# Readable synthetic names
# ------------------------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return text.split()


_ADJ = _words(
    "Golden Silver Electric Velvet Midnight Neon Broken Lonely Wild Quiet Crimson Blue Burning "
    "Frozen Hidden Lucky Paper Sweet Bitter Endless Distant Little Restless Silent Shining Secret "
    "Hollow Purple Summer Winter Autumn Northern Southern Rusty Gentle Fading Sleepy Dancing "
    "Falling Rising Crystal Cosmic Savage Sugar Static Faded Honey Lost Holy Strange Tender Heavy "
    "Bright Dark Empty Open Final Early Late Perfect Simple Slow Modern"
)
_NOUN = _words(
    "Heart River Highway Ocean Fire Rain Dream Summer Night Morning Mirror Garden Shadow Thunder "
    "Diamond Echo Horizon Window Letter Island Desert Harbor Signal Engine Lantern Compass Canyon "
    "Meadow Paradise Satellite Skyline Mountain Forest Storm Sunrise Sunset Train Radio Avenue "
    "Kingdom Moon Star Ghost Angel Stranger Lover Memory Promise Rebel Runaway Season Feather "
    "Anchor Circle Carousel Velocity Voyage Orchard Wave Ember Tide Arrow Parade Cathedral"
)
_PLURAL = _words(
    "Foxes Wolves Tigers Ravens Kids Strangers Lovers Pilots Sailors Kings Queens Saints Ghosts "
    "Machines Rebels Dreamers Giants Horses Bandits Lions Wanderers Echoes Shadows Satellites "
    "Owls Comets Robots Cowboys Sisters Brothers Monks Riders Thieves Hearts Tides Lights"
)
_FIRST = _words(
    "Alex Sam Maya Leo Nina Jonas Ava Eli Zoe Max Iris Noah Lena Omar Ruby Felix Clara Hugo Nora "
    "Luca Mila Theo Ada Kai Vera Milo Lola Ezra Jade Otis Rosa Ivan Sara Dev Yuki Amir Tess Joel "
    "June Marco"
)
_LAST = _words(
    "Rivers Stone Hayes Moreau Kowalski Park Silva Novak Brooks Ortega Lindqvist Quinn Nakamura "
    "Dubois Okafor Marsh Calloway Ferreira Holt Varga Reyes Sinclair Wolfe Bianchi Adler Keane "
    "Larsen Mendez Foster Gray Bell Ward Lowe Nash Frost Vance Cruz Lane Fox Shaw"
)
_VERB = _words(
    "Chasing Dancing Following Running Watching Burning Painting Holding Calling Breaking Crossing "
    "Leaving Losing Finding Riding Remembering Walking Facing Counting Saving Hunting"
)
_VERSION = (
    "Live", "Remastered 2011", "Radio Edit", "Acoustic", "Remix", "Demo", "Single Version",
    "Extended Mix", "Mono", "Bonus Track",
)


def _the(words: Sequence[str]) -> list[str]:
    return [f"the {w}" for w in words]


_ARTIST_TEMPLATES: tuple[tuple[Sequence[str], ...], ...] = (
    (["The "], _ADJ, [" "], _PLURAL),
    (_FIRST, [" "], _LAST),
    (_ADJ, [" "], _NOUN),
    (["DJ ", "MC ", "Lil ", "Young "], _NOUN),
    (_FIRST, [" & the "], _PLURAL),
    (_NOUN, [" Club", " Collective", " Orchestra", " Trio", " Society", " Project"]),
)
# Template sizes set how often each shape appears, so the decorated shapes are kept small.
_TRACK_TEMPLATES: tuple[tuple[Sequence[str], ...], ...] = (
    (_ADJ, [" "], _NOUN),
    (_ADJ, [" "], _PLURAL),
    (_VERB, [" "], _the(_NOUN)),
    (_NOUN, [" of "], _the(_NOUN)),
    (_NOUN, [" ("], _VERSION, [")"]),
    (_NOUN, [" - "], _VERSION),
    (["Hello, ", "Goodbye, ", "Oh, ", "Come On, "], _FIRST),
    (_NOUN, [" (feat. "], _FIRST, [")"]),
    (["The \""], _NOUN, ["\""]),          # a quote inside a field, as real titles have
    (["I Love You, ", "Don't Go, ", "Wait, "], _NOUN),
)


def _template_sizes(templates: Sequence[Sequence[Sequence[str]]]) -> np.ndarray:
    return np.array([math.prod(len(s) for s in t) for t in templates], dtype=np.int64)


def _compose(codes: np.ndarray, templates: Sequence[Sequence[Sequence[str]]]) -> pa.Array:
    """Name number ``code`` (0 <= code < total combinations), built word by word.

    The code picks a template, then its mixed-radix digits pick one word per slot. Distinct codes
    give distinct names, which is how track names are kept unique within an artist.
    """
    sizes = _template_sizes(templates)
    bounds = np.cumsum(sizes)
    which = np.searchsorted(bounds, codes, side="right")
    order = np.argsort(which, kind="stable")
    pieces = []
    for t, slots in enumerate(templates):          # a loop over a handful of templates
        local = codes[order[which[order] == t]] - (bounds[t] - sizes[t])
        parts = []
        for slot in slots:
            parts.append(pa.array(slot).take(pa.array(local % len(slot))))
            local = local // len(slot)
        pieces.append(pc.binary_join_element_wise(*parts, "") if len(parts) > 1 else parts[0])
    names = pa.concat_arrays([p.cast(pa.string()) for p in pieces])
    return names.take(pa.array(np.argsort(order, kind="stable")))


def _scrambled_codes(
    index: np.ndarray, offset: np.ndarray | int, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map 0, 1, 2, ... to distinct, unordered-looking codes below ``total`` (and a wrap count).

    ``(offset + i * stride) mod total`` with ``stride`` coprime to ``total`` is a bijection, so the
    first ``total`` indices of one sequence never collide.
    """
    stride = int(total * 0.6180339887) | 1
    while math.gcd(stride, total) != 1:
        stride += 2
    codes = (np.asarray(offset, dtype=np.int64) + index.astype(np.int64) * stride) % total
    return codes, index // total


def _with_wrap(names: pa.Array, wrap: np.ndarray) -> pa.Array:
    """Append " 2", " 3", ... to names whose sequence wrapped past every combination."""
    if not (wrap > 0).any():
        return names
    suffix = pa.array(np.where(wrap > 0, np.char.add(" ", (wrap + 1).astype(str)), ""))
    return pc.binary_join_element_wise(names, suffix, "")


def artist_names(n: int, rng: Rng) -> pa.Array:
    """``n`` readable band or artist names, distinct while ``n`` is below the template space."""
    total = int(_template_sizes(_ARTIST_TEMPLATES).sum())
    codes, wrap = _scrambled_codes(np.arange(n), int(rng.integers(total)), total)
    return _with_wrap(_compose(codes, _ARTIST_TEMPLATES), wrap)


def track_names(track_artist: np.ndarray, num_artists: int, rng: Rng) -> pa.Array:
    """Readable song titles, distinct within each artist (so (artist, title) identifies a song).

    ``track_artist`` must be sorted (songs grouped by artist).
    """
    total = int(_template_sizes(_TRACK_TEMPLATES).sum())
    counts = np.bincount(track_artist, minlength=num_artists)
    rank = np.arange(len(track_artist)) - _segment_offsets(counts)[track_artist]
    offset = rng.integers(total, size=num_artists)[track_artist]
    codes, wrap = _scrambled_codes(rank, offset, total)
    return _with_wrap(_compose(codes, _TRACK_TEMPLATES), wrap)


# ------------------------------------------------------------------------------------------------
# Catalogue: genres, artists, songs
# ------------------------------------------------------------------------------------------------

@dataclass
class Catalogue:
    """Genres, artists and songs with popularities, and the samplers that walk the hierarchy."""

    genre_pop: np.ndarray         # (G,) float64, sums to 1
    artist_pop: np.ndarray        # (A,) float64
    artist_genres: np.ndarray     # (k, 2) int64 pairs (artist, genre)
    track_artist: np.ndarray      # (T,) int64, sorted
    track_pop: np.ndarray         # (T,) float64
    track_genre: np.ndarray       # (T,) int64, one of its artist's genres
    track_offset: np.ndarray      # (A,) first track of each artist
    track_count: np.ndarray       # (A,) number of tracks of each artist
    genre_artists: GroupedSampler  # genre -> artist, by artist popularity
    artist_tracks: GroupedSampler  # artist -> track, by song popularity

    @property
    def genre_ok(self) -> np.ndarray:
        """Genres that have at least one artist with songs (only those can be drawn)."""
        return self.genre_artists.total > 0


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Normalised Zipf weights ``r ** -exponent`` for ranks 1..n."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return w / w.sum()


def _draw_artist_genres(num_artists: int, genre_pop: np.ndarray, rng: Rng) -> np.ndarray:
    """1-3 distinct genres per artist, drawn by genre popularity; (artist, genre) pairs."""
    k = rng.choice(len(GENRES_PER_ARTIST_P), size=num_artists, p=GENRES_PER_ARTIST_P) + 1
    _, chosen = _gumbel_top_k(np.log(genre_pop)[None, :].repeat(num_artists, 0), k, rng)
    artist, genre = np.nonzero(chosen)
    return np.stack([artist, genre], axis=1).astype(np.int64)


def build_catalogue(num_tracks: int, num_artists: int, rng: Rng) -> Catalogue:
    """Draw genres, artists and songs as described in the module docstring."""
    genre_pop = zipf_weights(len(GENRES), GENRE_ZIPF)
    artist_pop = rng.pareto(ARTIST_PARETO, size=num_artists) + 1.0
    pairs = _draw_artist_genres(num_artists, genre_pop, rng)
    # Every artist gets a song first (while songs last); the rest go to popular artists more often,
    # because popular acts have bigger catalogues (sub-linearly: exponent 0.5).
    first = min(num_tracks, num_artists)
    share = np.sqrt(artist_pop) / np.sqrt(artist_pop).sum()
    counts = np.bincount(rng.permutation(num_artists)[:first], minlength=num_artists)
    counts += rng.multinomial(num_tracks - first, share)
    track_artist = np.repeat(np.arange(num_artists), counts)
    offset = _segment_offsets(counts)
    rank = np.arange(num_tracks) - offset[track_artist]
    track_pop = (artist_pop[track_artist] * (rank + 1.0) ** -SONG_ZIPF
                 * rng.lognormal(0.0, 0.3, size=num_tracks))
    # A song's genre: one of its artist's genres, drawn uniformly.
    n_genres = np.bincount(pairs[:, 0], minlength=num_artists)
    pick = _segment_offsets(n_genres)[track_artist] + rng.integers(
        0, n_genres[track_artist])
    track_genre = pairs[pick, 1]
    has_songs = (counts > 0).astype(np.float64)
    genre_artists = GroupedSampler.build(
        pairs[:, 1], pairs[:, 0], artist_pop[pairs[:, 0]] * has_songs[pairs[:, 0]], len(GENRES))
    artist_tracks = GroupedSampler.build(track_artist, np.arange(num_tracks), track_pop,
                                         num_artists)
    return Catalogue(genre_pop, artist_pop, pairs, track_artist, track_pop, track_genre,
                     offset, counts, genre_artists, artist_tracks)


def taste_genres(num_people: int, k: np.ndarray, cat: Catalogue,
                 rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Each person's preferred genres: ``k`` distinct genres drawn by genre popularity.

    Returns ``(rank, mask)`` of shape (people, G): ``mask`` marks preferred genres and ``rank``
    orders them (0 = favourite). Genres without artists are never preferred.
    """
    log_w = np.where(cat.genre_ok, np.log(cat.genre_pop), -np.inf)
    k = np.minimum(k, int(cat.genre_ok.sum()))
    return _gumbel_top_k(np.repeat(log_w[None, :], num_people, 0), k, rng)


def taste_sampler(rank: np.ndarray, mask: np.ndarray, cat: Catalogue,
                  taste_share: float) -> GroupedSampler:
    """Person -> genre sampler: ``taste_share`` of draws from the preferred genres (the favourite
    strongest), the rest by global popularity, which is how people still hear the hits."""
    pref = np.where(mask, 1.0 / (rank + 1.0), 0.0)
    pref /= pref.sum(axis=1, keepdims=True)
    glob = np.where(cat.genre_ok, cat.genre_pop, 0.0)
    w = taste_share * pref + (1.0 - taste_share) * glob / glob.sum()
    n, g = w.shape
    return GroupedSampler.build(np.repeat(np.arange(n), g), np.tile(np.arange(g), n),
                                w.ravel(), n)


# ------------------------------------------------------------------------------------------------
# Listening sessions
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserType:
    """How one kind of listener behaves.

    Casual listeners open the app now and then, stay inside one or two genres and their favourite
    artists, and let short sessions play out. Power listeners listen every day in long sessions,
    roam over more genres, and skip more because they actively look for the next thing.
    """

    name: str
    share: float               # share of users of this type
    sessions_per_day: float    # mean of the Poisson number of sessions a day
    min_genres: int            # preferred genres, drawn uniformly in [min_genres, max_genres]
    max_genres: int
    session_len: float         # mean tracks per session (geometric, so many short sessions)
    skip_rate: float           # probability of skipping a track inside the user's taste
    favourite_share: float     # share of fresh artist picks that go to a favourite artist


USER_TYPES: tuple[UserType, ...] = (
    UserType("casual", 0.50, 0.45, 1, 2, 6.0, 0.15, 0.45),
    UserType("regular", 0.35, 1.20, 2, 4, 11.0, 0.22, 0.35),
    UserType("power", 0.15, 2.80, 3, 6, 20.0, 0.30, 0.25),
)
TASTE_SHARE = 0.85          # share of genre draws from the user's preferred genres
SAME_ARTIST_P = 0.30        # next track stays with the artist (album play, autoplay)
GENRE_DRIFT_P = 0.08        # per track, the session's mood switches to a new genre
OUT_OF_TASTE_SKIP = 1.8     # skips are this much likelier outside the user's genres
FAVOURITES = 8              # favourite artists per user
MAX_SESSION_LEN = 200
SESSION_BREAK_S = 300       # minimum pause between two sessions of one user
# Relative session starts per hour of day (UTC): commute bumps, an evening peak, a night trough.
HOUR_WEIGHTS = np.array([
    1.2, 0.7, 0.4, 0.25, 0.2, 0.3, 0.8, 1.6, 2.2, 2.0, 1.8, 1.9,
    2.2, 2.0, 1.9, 2.0, 2.3, 2.8, 3.2, 3.6, 3.9, 3.7, 2.9, 2.0,
])
WEEKDAY_WEIGHTS = np.array([0.95, 0.95, 0.95, 1.0, 1.1, 1.2, 1.15])   # Monday .. Sunday


@dataclass
class _Users:
    type_idx: np.ndarray      # (U,) index into USER_TYPES
    activity: np.ndarray      # (U,) personal multiplier of the type's session rate
    pref_mask: np.ndarray     # (U, G) preferred genres
    genres: GroupedSampler    # user -> genre
    favourites: np.ndarray    # (U, FAVOURITES) artist ids


def _type_array(field_name: str) -> np.ndarray:
    return np.array([getattr(t, field_name) for t in USER_TYPES])


def _draw_users(num_users: int, cat: Catalogue, rng: Rng) -> _Users:
    type_idx = rng.choice(len(USER_TYPES), size=num_users, p=_type_array("share"))
    # Log-normal spread inside a type, normalised to mean 1 so the type's rate is the mean rate.
    activity = rng.lognormal(-0.5 * 0.5**2, 0.5, size=num_users)
    k = rng.integers(_type_array("min_genres")[type_idx], _type_array("max_genres")[type_idx] + 1)
    rank, mask = taste_genres(num_users, k, cat, rng)
    genres = taste_sampler(rank, mask, cat, TASTE_SHARE)
    fav_genre = genres.sample(np.repeat(np.arange(num_users), FAVOURITES), rng)
    favourites = cat.genre_artists.sample(fav_genre, rng).reshape(num_users, FAVOURITES)
    return _Users(type_idx, activity, mask, genres, favourites)


def _draw_sessions(users: _Users, days: int, start_day: int, rng: Rng) -> dict[str, np.ndarray]:
    """Sessions per user and day (Poisson), their start second (hour profile) and length."""
    weekday = (start_day + np.arange(days) + 3) % 7          # 1970-01-01 was a Thursday
    lam = (_type_array("sessions_per_day")[users.type_idx] * users.activity)[:, None]
    counts = rng.poisson(lam * WEEKDAY_WEIGHTS[weekday][None, :]).ravel()
    user = np.repeat(np.repeat(np.arange(len(users.type_idx)), days), counts)
    day = np.repeat(np.tile(np.arange(days), len(users.type_idx)), counts)
    hour = rng.choice(24, size=len(user), p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    second = (day * 86400 + hour * 3600 + rng.integers(0, 3600, size=len(user))).astype(np.int64)
    order = np.lexsort((second, user))
    user, second = user[order], second[order]
    mean_len = _type_array("session_len")[users.type_idx[user]]
    length = np.minimum(rng.geometric(1.0 / mean_len), MAX_SESSION_LEN)
    return {"user": user, "second": second, "length": length}


def _draw_event_artists(users: _Users, cat: Catalogue, ev_user: np.ndarray,
                        session_start: np.ndarray, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Per event, the artist and whether it continues the previous track's artist.

    A session has a mood genre, drawn from the user's taste, that drifts now and then. Each track
    either stays with the current artist (``SAME_ARTIST_P``) or is a fresh pick: one of the user's
    favourite artists, or an artist of the current genre by popularity.
    """
    n = len(ev_user)
    genre_fresh = session_start | (rng.random(n) < GENRE_DRIFT_P)
    genre = np.zeros(n, dtype=np.int64)
    genre[genre_fresh] = users.genres.sample(ev_user[genre_fresh], rng)
    genre = genre[_forward_fill_index(genre_fresh)]
    fresh = genre_fresh | (rng.random(n) >= SAME_ARTIST_P)
    fav_share = _type_array("favourite_share")[users.type_idx[ev_user[fresh]]]
    use_fav = rng.random(int(fresh.sum())) < fav_share
    fav = users.favourites[ev_user[fresh], rng.integers(0, FAVOURITES, size=int(fresh.sum()))]
    by_genre = cat.genre_artists.sample(genre[fresh], rng)
    artist = np.zeros(n, dtype=np.int64)
    artist[fresh] = np.where(use_fav, fav, by_genre)
    return artist[_forward_fill_index(fresh)], fresh


def _draw_event_tracks(cat: Catalogue, artist: np.ndarray, fresh: np.ndarray,
                       rng: Rng) -> np.ndarray:
    """A fresh pick draws a song of the artist by popularity; staying with the artist plays on in
    catalogue (album) order from there, so continuations are not the same hit over and over."""
    first = cat.artist_tracks.sample(artist[fresh], rng)
    song = np.zeros(len(artist), dtype=np.int64)
    song[fresh] = first
    anchor = _forward_fill_index(fresh)
    steps = np.arange(len(artist)) - anchor
    base = cat.track_offset[artist]
    return base + (song[anchor] - base + steps) % cat.track_count[artist]


def _draw_playback(users: _Users, cat: Catalogue, ev_user: np.ndarray, song: np.ndarray,
                   duration_ms: np.ndarray, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Skips and completion: skips stop early (Beta(1, 6), mean ~0.14); other plays mostly run to
    the end, a few stop in the last half. Songs outside the user's genres are skipped more."""
    in_taste = users.pref_mask[ev_user, cat.track_genre[song]]
    p_skip = _type_array("skip_rate")[users.type_idx[ev_user]]
    p_skip = np.minimum(np.where(in_taste, p_skip, p_skip * OUT_OF_TASTE_SKIP), 0.9)
    n = len(song)
    skipped = rng.random(n) < p_skip
    full = rng.random(n) < 0.88
    completion = np.where(full, 1.0, rng.uniform(0.5, 1.0, size=n))
    completion = np.where(skipped, rng.beta(1.0, 6.0, size=n), completion).astype(np.float32)
    ms_played = np.round(duration_ms[song] * completion.astype(np.float64)).astype(np.int32)
    return ms_played, completion


def _place_sessions(sess: dict, ev_session: np.ndarray, ev_pos: np.ndarray,
                    ms_played: np.ndarray, rng: Rng) -> np.ndarray:
    """Event start times: tracks follow each other with 1-3 s gaps, and a session that would start
    before the previous one of the same user ended is pushed back past it (plus a break).

    With ``C_i`` the summed length of a user's earlier sessions, the pushed start ``s'_i =
    max(s_i, s'_{i-1} + d_{i-1})`` equals ``C_i + running_max(s_j - C_j)``: one vectorised pass.
    """
    step = ms_played.astype(np.int64) // 1000 + rng.integers(1, 4, size=len(ms_played))
    before = np.cumsum(step) - step                             # exclusive cumsum over all events
    within = before - before[np.arange(len(step)) - ev_pos]     # ... restarted at each session
    dur = np.bincount(ev_session, weights=step, minlength=len(sess["user"])).astype(np.int64)
    dur += SESSION_BREAK_S
    user, s = sess["user"], sess["second"]
    user_first = np.searchsorted(user, user)                   # sessions are sorted by user
    cdur = np.cumsum(dur) - dur
    c = cdur - cdur[user_first]
    # Lift each user's values above every earlier user's, so one running max never crosses users.
    lift = user.astype(np.int64) * (int(s.max(initial=0)) + int(dur.sum()) + 1)
    start = np.maximum.accumulate(s - c + lift) - lift + c
    return start[ev_session] + within


def _session_tables(num_users: int, num_songs: int, num_artists: int, cat: Catalogue,
                    users: _Users, rng: Rng) -> dict[str, pd.DataFrame]:
    key_w = max(6, len(str(num_users - 1)))
    song_w = max(5, len(str(num_songs - 1)))
    ids = np.arange(num_users)
    first = np.array(_FIRST)[rng.integers(len(_FIRST), size=num_users)]
    initial = np.array(list("ABCDEFGHIJKLMNOPRSTVWZ"))[rng.integers(22, size=num_users)]
    owners = pd.DataFrame({
        "owner_id": ids.astype(np.int32),
        "key": np.char.add("user_", np.char.zfill(ids.astype(str), key_w)),
        "name": np.char.add(np.char.add(first, " "), np.char.add(initial, ".")),
        "user_type": np.array([t.name for t in USER_TYPES])[users.type_idx],
    })
    song_ids = np.arange(num_songs)
    tracks = pd.DataFrame({
        "track_id": song_ids.astype(np.int32),
        "key": np.char.add("song_", np.char.zfill(song_ids.astype(str), song_w)),
        "name": track_names(cat.track_artist, num_artists, rng).to_numpy(zero_copy_only=False),
        "artist_id": cat.track_artist.astype(np.int32),
        "genre_id": cat.track_genre.astype(np.int32),
    })
    artists = pd.DataFrame({
        "artist_id": np.arange(num_artists, dtype=np.int32),
        "name": artist_names(num_artists, rng).to_numpy(zero_copy_only=False),
    })
    genres = pd.DataFrame({"genre_id": np.arange(len(GENRES), dtype=np.int32),
                           "name": list(GENRES)})
    artist_genres = pd.DataFrame(cat.artist_genres.astype(np.int32),
                                 columns=["artist_id", "genre_id"])
    return {"owners": owners, "tracks": tracks, "artists": artists, "genres": genres,
            "artist_genres": artist_genres}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def generate_sessions(
    num_users: int = 1000,
    days: int = 30,
    num_songs: int = 5000,
    num_artists: int = 500,
    seed: int = 0,
    start: str = "2024-01-01",
) -> Dataset:
    """A synthetic listening log as a canonical ``kind="session"`` dataset.

    Model of listening behaviour (all parameters are module constants, recorded in the manifest):

    * Users are casual, regular or power listeners (:data:`USER_TYPES`), with a personal activity
      multiplier, 1-6 preferred genres and 8 favourite artists drawn from their taste.
    * Each user opens a Poisson number of sessions per day (more at weekends), starting at an hour
      drawn from :data:`HOUR_WEIGHTS` (evening peak, night trough; timestamps are UTC).
    * A session plays a geometric number of tracks. It has a mood genre from the user's taste that
      occasionally drifts; each track stays with the current artist with probability
      :data:`SAME_ARTIST_P` (playing on in album order) or is a fresh pick of a favourite artist or
      of an artist of the mood genre, then a song of that artist by popularity.
    * A track is skipped with the user type's skip rate (higher outside the user's genres); a skip
      has low ``completion`` (played share of the song), other plays mostly complete.
      ``ms_played = completion * duration``; the next track starts 1-3 s after this one ends.

    ``interactions`` has one row per play: owner_id, track_id, order (unix seconds), ms_played
    (int32) and completion (float32), sorted by (owner_id, order) with ``order`` strictly
    increasing within a user. ``tracks`` carries extra columns ``genre_id`` and ``duration_ms``.
    """
    _check_positive(num_users=num_users, days=days, num_songs=num_songs,
                    num_artists=num_artists)
    try:
        t0 = int(np.datetime64(start, "s").astype(np.int64))
    except ValueError:
        raise ValueError(f"start must be a date like 2024-01-01, got {start!r}") from None
    rng = np.random.default_rng(seed)
    cat = build_catalogue(num_songs, num_artists, rng)
    users = _draw_users(num_users, cat, rng)
    sess = _draw_sessions(users, days, t0 // 86400, rng)
    ev_session = np.repeat(np.arange(len(sess["user"])), sess["length"])
    ev_pos = np.arange(len(ev_session)) - _segment_offsets(sess["length"])[ev_session]
    ev_user = sess["user"][ev_session]
    artist, fresh = _draw_event_artists(users, cat, ev_user, ev_pos == 0, rng)
    song = _draw_event_tracks(cat, artist, fresh, rng)
    duration_ms = np.clip(rng.lognormal(np.log(210_000), 0.3, size=num_songs),
                          60_000, 900_000).round()
    ms_played, completion = _draw_playback(users, cat, ev_user, song, duration_ms, rng)
    order = t0 + _place_sessions(sess, ev_session, ev_pos, ms_played, rng)
    tables = _session_tables(num_users, num_songs, num_artists, cat, users, rng)
    tables["tracks"]["duration_ms"] = duration_ms.astype(np.int32)
    interactions = pd.DataFrame({
        "owner_id": ev_user.astype(np.int32), "track_id": song.astype(np.int32),
        "order": order.astype(np.int64), "ms_played": ms_played, "completion": completion,
    })
    manifest = {
        "source": {
            "generator": "synthetic_sessions", "seed": int(seed), "num_users": int(num_users),
            "days": int(days), "num_songs": int(num_songs), "num_artists": int(num_artists),
            "start": str(start), "user_types": [asdict(t) for t in USER_TYPES],
            "genre_zipf": GENRE_ZIPF, "artist_pareto": ARTIST_PARETO, "song_zipf": SONG_ZIPF,
            "taste_share": TASTE_SHARE, "same_artist_p": SAME_ARTIST_P,
            "genre_drift_p": GENRE_DRIFT_P, "out_of_taste_skip": OUT_OF_TASTE_SKIP,
            "favourites": FAVOURITES, "max_session_len": MAX_SESSION_LEN,
            "hour_weights": HOUR_WEIGHTS.tolist(), "weekday_weights": WEEKDAY_WEIGHTS.tolist(),
        },
        "notes": {"events": len(interactions), "sessions": len(sess["user"]),
                  "timezone": "UTC"},
    }
    return Dataset(kind="session", interactions=interactions, manifest=manifest, **tables)


# ------------------------------------------------------------------------------------------------
# Kaggle "Spotify Playlists" CSV
# ------------------------------------------------------------------------------------------------

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
    return _segment_offsets(counts), counts, flat


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
    anchor_start = _segment_offsets(n_anchors)
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
    _check_positive(rows=rows, chunk_rows=chunk_rows)
    num_tracks = int(num_tracks or default_catalogue_size(rows))
    num_artists = int(num_artists or min(num_tracks, max(10, num_tracks // 7)))
    _check_positive(num_tracks=num_tracks, num_artists=num_artists)
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
