"""docker-py, reached in one place: the lazy import, the client, and every private name of it
that dockmagic touches (each with why). Nothing outside ``dockmagic/engine`` imports docker,
requests or urllib3 (tests/test_architecture.py checks).
"""
from __future__ import annotations


def import_docker():
    """docker-py, imported on first use (loading the extension touches no engine)."""
    import docker  # the one lazy import of the SDK

    return docker


def make_api_client(endpoint, timeout: float):
    """A low-level `docker.APIClient` for ENDPOINT (TLS from its cert folder where it has one)."""
    docker = import_docker()
    tls = None
    if endpoint.uses_tls and endpoint.url.startswith(("tcp://", "https://")):
        import os

        from docker.tls import TLSConfig

        path = endpoint.cert_path or ""
        ca = os.path.join(path, "ca.pem")
        tls = TLSConfig(client_cert=(os.path.join(path, "cert.pem"), os.path.join(path, "key.pem")),
                        ca_cert=ca if os.path.exists(ca) and not endpoint.skip_tls_verify else None,
                        verify=not endpoint.skip_tls_verify and (endpoint.tls_verify or
                                                                 os.path.exists(ca)))
    # The version is asked for at once: an engine that accepts and never answers must not hold
    # the caller (and every other caller of this engine) for the long call timeout.
    first = min(timeout, NEGOTIATE_TIMEOUT_S)
    if tls is None or not isinstance(getattr(tls, "ca_cert", None), str) or not tls.verify:
        api = docker.APIClient(base_url=endpoint.url, timeout=first, version="auto", tls=tls)
    else:
        # Verified against the engine's own CA: requests would replace that CA with the one
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE name (requests#3829), and the engine's certificate
        # then fails to verify. Those variables are not read for this client (trust_env off),
        # so the API version is fetched here, after that, not by version="auto" in the
        # constructor.
        api = docker.APIClient(base_url=endpoint.url, timeout=first, version=MIN_API_VERSION,
                               tls=tls)
        api.trust_env = False
        # Private: `_version` is what version="auto" sets from the same request.
        api._version = api.version(api_version=False)["ApiVersion"]
    api.timeout = timeout  # what each later call gets (docker-py reads it per request)
    return api


#: Seconds the first call to an engine (its API version) may take.
NEGOTIATE_TIMEOUT_S = 10.0
#: The oldest API version docker-py speaks; only used until the engine says its own.
MIN_API_VERSION = "1.24"


# -- docker-py private API: all of it, here -----------------------------------------------------
def create_args(api, kwargs: dict) -> dict:
    """`containers.create(**kwargs)` kwargs -> `APIClient.create_container` args.

    Private: docker.models.containers._create_container_args is the only code that turns the
    high-level kwargs (which the translator emits, and which docker-py validates) into a
    HostConfig; going through it keeps one round trip (the high-level create would inspect too).
    """
    from docker.models.containers import _create_container_args

    return _create_container_args(dict(kwargs, version=api._version))


def raw_socket(sock):
    """The OS socket under docker-py's attach wrapper (private `_sock` of its SocketIO): reads
    and writes go straight to it, with half-close (`shutdown(SHUT_WR)`) for end of stdin."""
    return getattr(sock, "_sock", sock)


def logs_response(api, name: str, params: dict, follow: bool):
    """A streamed `GET /containers/NAME/logs` response, read frame by frame by the caller.

    Private: docker-py's public `logs()` merges stdout and stderr; its own request helpers
    (`_get`, `_url`, `_raise_for_status`) keep the two apart. A followed quiet container must not
    hit the client's read timeout (`_disable_socket_timeout`).
    """
    res = api._get(api._url("/containers/{0}/logs", name), params=params, stream=True)
    api._raise_for_status(res)
    if follow:
        api._disable_socket_timeout(api._get_raw_response_socket(res))
    return res


def begin_wait(api, cid: str, condition: str):
    """`POST /containers/CID/wait?condition=CONDITION`, returned once its headers are in.

    The engine answers the headers as soon as the wait is registered and the body (the exit
    status) when the condition is met, so a wait begun before `start` cannot miss an exit, not even
    that of a container the engine auto-removes at once (the CLI's own order for `run --rm`).
    Private: docker-py's public `wait()` reads the whole answer; its request helpers (`_post`,
    `_url`, `_raise_for_status`) stream it. No read timeout: a cell may run for days.
    """
    res = api._post(api._url("/containers/{0}/wait", cid), params={"condition": condition},
                    stream=True, timeout=None)
    api._raise_for_status(res)
    return res


def build_context(root: str, files, extra_files):
    """A tar build context (docker-py's public-but-undocumented build utilities)."""
    from docker.utils.build import create_archive

    return create_archive(root=root, files=files, extra_files=extra_files)


def context_files(root: str, patterns, dockerfile: str):
    """The files a build context sends, honouring .dockerignore patterns."""
    from docker.utils.build import exclude_paths

    return exclude_paths(root, patterns, dockerfile=dockerfile)
