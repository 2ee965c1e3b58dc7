"""Tunables and limits, in one place."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.apimart.ai"
DEFAULT_MODEL = "gpt-image-2"
USER_AGENT_PRODUCT = "apimart-cli"

# The settings' config keys, in the order `apimart config list` shows them: the rows of
# `settings.SETTINGS` (whose table `apimart --help` need not build to name them).
SETTING_KEYS = ("api_key", "base_url", "output_dir", "references", "metadata", "preview")

# The API's limits, from APIMart's documentation of the image generation endpoint.
MAX_IMAGES_PER_TASK = 10
MAX_REFERENCES = 16
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
MAX_REFERENCES_TOTAL_BYTES = 256 * 1024 * 1024
MAX_PIXEL_SIDE = 3840

# Retries: exponential backoff with jitter (README, "Exit codes").
RETRY_MAX_ATTEMPTS = 6
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 8.0
RETRY_AFTER_CAP = 30.0

# HTTP timeouts, seconds.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# No API request takes longer than this from connecting to its last byte, whatever
# the server sends (one byte a second cannot hold it): a transient failure, retried.
REQUEST_TIME_LIMIT = 60.0
# A download (or upload) has no total limit: it fails, transiently, when fewer than
# STALL_MIN_BYTES_PER_SECOND arrive on average over a window of STALL_WINDOW seconds.
STALL_WINDOW = 30.0
STALL_MIN_BYTES_PER_SECOND = 4 * 1024

# --timeout of every command that calls the service, unless it says otherwise.
DEFAULT_COMMAND_TIMEOUT = 120.0

# Polling.
DEFAULT_WAIT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 2.0
MIN_POLL_INTERVAL = 0.25
MAX_POLL_INTERVAL = 10.0
DEFAULT_MAX_IN_FLIGHT = 64  # the most status requests at once (fewer until needed, and on 429)
HEARTBEAT_SECONDS = 30.0
DOWNLOAD_WORKERS = 8  # images downloading at once, while the other tasks are polled
# Files a wait keeps open besides its polls' connections: for each download its
# connection, part file, validator and folder; the history's three; the standard
# streams, and what an import opens meanwhile.
FILES_BESIDES_POLLS = 4 * DOWNLOAD_WORKERS + 16
MAX_PARALLEL_QUERIES = 8  # `status`: tasks asked about at once
# A client's request thread idle this long ends (a long-lived `apimart mcp` keeps few).
REQUEST_THREAD_IDLE_SECONDS = 60.0
# Off a terminal, a download still running says how far it got at most this often.
DOWNLOAD_NOTE_SECONDS = 5.0

# Batches.
DEFAULT_CONCURRENCY = 4  # submissions in flight; fewer while the service answers 429
MAX_CONCURRENCY = 32
RATE_LIMIT_PAUSE = 1.0  # seconds new polls or submissions wait after a 429 with no Retry-After
DEFAULT_BATCH_TIMEOUT = 1800.0
DEFAULT_BATCH_NAME = "{task_id}_{index}"  # `--name`: the name `wait` and `download` give

# Reading replies: no API reply is anywhere near this large.
MAX_JSON_REPLY_BYTES = 8 * 1024 * 1024
# An image larger than this is not an image this API makes.
MAX_IMAGE_DOWNLOAD_BYTES = 512 * 1024 * 1024
# A video is larger; past this it is not a result this API makes either.
MAX_VIDEO_DOWNLOAD_BYTES = 16 * 1024 * 1024 * 1024
# What a model makes, as its schema's `operation` says, and where it is submitted.
IMAGE_OPERATION = "image_generation"
VIDEO_OPERATION = "video_generation"
GENERATION_PATHS = {
    IMAGE_OPERATION: "/v1/images/generations",
    VIDEO_OPERATION: "/v1/videos/generations",
}
