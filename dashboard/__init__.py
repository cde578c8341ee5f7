"""``aether dashboard``: the built-in operator page of the embedded default stack.

    scrape ──► series (ScrapeRing: rounds of scrapes; PromQL-like increase, rate, quantile) ─┐
    topic_reader ──► drift_log (<ns>.drift), exposure_view (<ns>.impressions) ────────────────┤
                                                           view (one JSON-ready dict) ◄───────┘
                                                  page + svg (HTML, inline SVG) │ /api/status (JSON)
    server: DashboardServer (ThreadingHTTPServer, scraper thread, own /metrics)
    config, targets: what to scrape and read, from the one settings object

Pure and tested without I/O: ``series``, ``drift_log``, ``exposure_view``, ``view``, ``svg``,
``page``. Metric names are docs/metrics.md's, read exactly as Prometheus reads them.
"""
