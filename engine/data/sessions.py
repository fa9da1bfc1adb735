"""Synthetic listening sessions (canonical ``kind="session"``) on the shared catalogue model.

Users of three types (casual, regular, power) differ in activity, breadth of taste, session length
and skipping; see :data:`USER_TYPES`. The catalogue (genres, artists, songs and their
popularities) is :mod:`engine.data.catalogue`'s. Everything is drawn from
``numpy.random.default_rng(seed)``, so the same arguments always give byte-identical output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from engine.data.canonical import Dataset
from engine.data.catalogue import (
    ARTIST_PARETO,
    FIRST_NAMES,
    GENRE_ZIPF,
    GENRES,
    SONG_ZIPF,
    Catalogue,
    GroupedSampler,
    Rng,
    artist_names,
    build_catalogue,
    check_positive,
    segment_offsets,
    taste_genres,
    taste_sampler,
    track_names,
)


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


def _forward_fill_index(fresh: np.ndarray) -> np.ndarray:
    """For each position, the index of the latest position ``<=`` it where ``fresh`` is True.

    Used to carry a draw (genre, artist) forward through a session until the next fresh draw;
    ``fresh`` is True at every session start, so nothing leaks across sessions.
    """
    idx = np.where(fresh, np.arange(len(fresh)), 0)
    return np.maximum.accumulate(idx) if len(idx) else idx


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
    first = np.array(FIRST_NAMES)[rng.integers(len(FIRST_NAMES), size=num_users)]
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
    check_positive(num_users=num_users, days=days, num_songs=num_songs,
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
    ev_pos = np.arange(len(ev_session)) - segment_offsets(sess["length"])[ev_session]
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
