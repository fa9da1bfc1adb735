"""The model of a music catalogue that both synthetic generators share.

* **Genres** (35 real names) have Zipf popularity: the r-th genre is played about ``r**-1`` as
  often as the first, so a few genres dominate and a long tail is rarely heard.
* **Artists** have Pareto popularity (a few stars, many niche acts) and belong to 1-3 genres.
* **Songs** belong to one artist. A song's popularity is its artist's popularity times a Zipf
  factor over the song's rank inside the artist's catalogue (every artist has a few hits), with a
  little log-normal noise. Every draw below is hierarchical -- genre, then artist within the genre,
  then song within the artist -- so the marginal song popularity is heavy-tailed, and songs of one
  artist, and artists of one genre, are listened to together: the co-occurrence structure that
  collaborative filtering and a genre-aware model can learn from.

Built on it: listening sessions (:mod:`engine.data.sessions`) and Kaggle playlist CSVs
(:mod:`engine.data.kaggle_writer`). This module also holds the readable artist and track names and
the vectorised numpy helpers they share.

Everything is drawn from ``numpy.random.default_rng(seed)`` (or streams derived from the seed), and
nothing reads the clock, so the same arguments always give byte-identical output.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def segment_offsets(lengths: np.ndarray) -> np.ndarray:
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
FIRST_NAMES = _words(
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
    (FIRST_NAMES, [" "], _LAST),
    (_ADJ, [" "], _NOUN),
    (["DJ ", "MC ", "Lil ", "Young "], _NOUN),
    (FIRST_NAMES, [" & the "], _PLURAL),
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
    (["Hello, ", "Goodbye, ", "Oh, ", "Come On, "], FIRST_NAMES),
    (_NOUN, [" (feat. "], FIRST_NAMES, [")"]),
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
    rank = np.arange(len(track_artist)) - segment_offsets(counts)[track_artist]
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
    offset = segment_offsets(counts)
    rank = np.arange(num_tracks) - offset[track_artist]
    track_pop = (artist_pop[track_artist] * (rank + 1.0) ** -SONG_ZIPF
                 * rng.lognormal(0.0, 0.3, size=num_tracks))
    # A song's genre: one of its artist's genres, drawn uniformly.
    n_genres = np.bincount(pairs[:, 0], minlength=num_artists)
    pick = segment_offsets(n_genres)[track_artist] + rng.integers(
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


def check_positive(**values: int) -> None:
    """Raise ValueError naming the first of ``values`` that is below 1."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
