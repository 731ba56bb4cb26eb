# syntax=docker/dockerfile:1
# The VideoConf image: one image for the node (`videoconf run`, the default command), the TURN
# server (`videoconf turn`) and the migrations (`videoconf migrate`).
#
#   docker build -t videoconf:0.1.0 .
#   docker run --rm videoconf:0.1.0 migrate          # with VIDEOCONF_DATABASE_URL set
#   docker run -p 8080:8080 -p 7882:7882/udp -e VIDEOCONF_UDP_PORT=7882 videoconf:0.1.0
#
# tests/deploy/test_container.py builds the same virtual environment from these lines, runs its
# entrypoint as the image's user and checks that the node answers /readyz.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compilers for any dependency without a wheel; none of them reach the final image
FROM ${PYTHON_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/videoconf
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY videoconf ./videoconf
COPY control_api ./control_api
COPY sfu ./sfu
COPY signaling ./signaling
COPY recorder ./recorder
COPY turn ./turn
COPY clients ./clients
RUN /opt/videoconf/bin/pip install .

# ---- the image: Python, the virtual environment, a user; no compiler, no source tree
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="VideoConf" \
      org.opencontainers.image.description="Video conferencing with a Python SFU: API, signaling, SFU, recorder and TURN" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 videoconf \
    && useradd --system --uid 10001 --gid videoconf --home-dir /var/lib/videoconf --create-home \
       --shell /usr/sbin/nologin videoconf
COPY --from=build /opt/videoconf /opt/videoconf
ENV PATH=/opt/videoconf/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIDEOCONF_HOST=0.0.0.0 \
    VIDEOCONF_DATA_DIR=/var/lib/videoconf \
    VIDEOCONF_RECORDINGS_DIR=/var/lib/videoconf/recordings
WORKDIR /var/lib/videoconf
# Recordings, the embedded database (when no database_url is set) and generated files live here.
VOLUME ["/var/lib/videoconf"]
USER 10001:10001
# 8080: HTTP(S) API, web client, signaling, /metrics; 7882/udp: ICE media (udp_port);
# 3478 and 5349: TURN (`videoconf turn`), 9641: the TURN server's /metrics and /healthz.
EXPOSE 8080/tcp 7882/udp 3478/udp 3478/tcp 5349/tcp 9641/tcp
# `videoconf turn` containers override it: ["CMD", "videoconf", "health", "--turn"].
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["videoconf", "health"]
ENTRYPOINT ["videoconf"]
CMD ["run"]
