"""``aether replay``: publish a MovieLens dataset onto the namespace's topics in event-time order.

The catalogue goes to ``<ns>.items`` first, then the ratings (mapped to events as documented in
``interactions.replay``) to ``<ns>.events``. ``--speed X`` replays X seconds of event time per
wall-clock second (0 = as fast as possible); ``--limit N`` takes the first N ratings.
"""

from __future__ import annotations

import argparse

from core.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="publish a MovieLens dataset as events")
    parser.add_argument(
        "--dataset", default="ml-latest-small", choices=("ml-latest-small", "ml-1m")
    )
    parser.add_argument("--data", help="dataset folder (default: shipped / ../shared/datasets)")
    parser.add_argument("--speed", type=float, default=0.0, help="event seconds per wall second")
    parser.add_argument("--limit", type=int, default=None, help="first N ratings only")
    parser.add_argument("--namespace", help="override AETHER_NAMESPACE")
    parser.add_argument("--no-catalog", action="store_true", help="skip the items topic")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interactions.movielens import load_movielens
    from interactions.replay import catalog_events, rating_event_count, rating_events
    from streams.publish import make_producer, publish
    from streams.topics import ensure_topics

    settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
    topics = ensure_topics(settings)
    data = load_movielens(args.dataset, args.data)
    ratings = data.ratings if args.limit is None else data.ratings.iloc[: args.limit]
    producer = make_producer(settings.kafka.bootstrap_servers)
    if not args.no_catalog:
        catalog = catalog_events(args.dataset, ratings, data.items)
        publish(producer, topics.items, catalog, total=len(catalog), description="catalog")
    sent = publish(
        producer,
        topics.events,
        rating_events(args.dataset, ratings),
        speed=args.speed,
        total=rating_event_count(ratings),
        description="events",
    )
    print(f"published {sent} events of {len(ratings)} ratings to {topics.events}")
    return 0
