"""Rolling the champion's InferenceService to a version, safely.

rollout(): patch the object to the version (create it if it does not exist), in serverless mode with
`canaryTrafficPercent` of the traffic on the new revision; wait until it is Ready and a smoke request
(POST /invocations, one short dialogue) is answered by that version (X-Mixtune-Model-Version); then give
it all traffic. In standard mode the Deployment rolls with maxUnavailable 0, so old pods serve until new
ones are Ready, and the smoke request waits until a new pod answers. Past ready_timeout_seconds it raises
DeployError naming what did not come up; restore() then puts the object back to the version it replaced
(serverless: canaryTrafficPercent 0, all traffic on the last rolled-out revision at once).

The Kubernetes API (CustomObjectsApi), HTTP, the clock and the log are injectable (Io).
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from components.common.config import MixtuneConfig
from components.deploy import manifest as m

VERSION_HEADER = "X-Mixtune-Model-Version"  # set by the server on every response (components/serve)
SMOKE_DIALOGUE = ("Customer: Hi, my order #4411 arrived with a cracked screen.\n"
                  "Agent: Sorry about that! I have sent a replacement, it ships tomorrow.")


class DeployError(RuntimeError):
    """The version does not serve; `touched` says whether the InferenceService was changed."""

    def __init__(self, message: str, touched: bool = False):
        super().__init__(message)
        self.touched = touched


class SmokeFailed(RuntimeError):
    """The smoke request got no good answer from the expected version."""


@dataclass
class DeployResult:
    model_name: str
    version: str
    model_uri: str
    url: str = ""
    revision: str = ""
    ready_seconds: float = 0.0
    replaced: str | None = None
    prediction: str = ""
    skipped: str = ""  # why nothing was deployed


def in_a_pod() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))  # Kubernetes sets it in every container


def default_api():
    """CustomObjectsApi: the pod's service account in the cluster, ~/.kube/config ($KUBECONFIG) elsewhere."""
    from kubernetes import client, config

    (config.load_incluster_config if in_a_pod() else config.load_kube_config)()
    return client.CustomObjectsApi()


def http_post(url: str, payload: dict, timeout: float) -> tuple[int, dict, bytes]:
    """POST JSON; (status, headers, body) for any HTTP answer; OSError when nothing answers."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers or {}), e.read()


@dataclass
class Io:
    """What the step touches outside Python; tests pass fakes."""

    api: object = None  # kubernetes CustomObjectsApi (None: in-cluster config, else ~/.kube/config)
    post: Callable[[str, dict, float], tuple[int, dict, bytes]] = http_post
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    in_cluster: bool | None = None  # None: in_a_pod()

    def address(self, setting: str) -> str:
        """serve.kubernetes.smoke_address, with auto resolved to where this process runs."""
        if setting != "auto":
            return setting
        inside = self.in_cluster if self.in_cluster is not None else in_a_pod()
        return "cluster-local" if inside else "external"


def api_error(error: Exception) -> str:
    """One line for a kubernetes ApiException: status, reason, the server's message."""
    status = getattr(error, "status", None)
    if status is None:
        return str(error)
    try:
        message = json.loads(getattr(error, "body", None) or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {status} {getattr(error, 'reason', '') or ''}".rstrip() + (f": {message}" if message else "")


def smoke_check(post, url: str, version: str, timeout: float) -> str:
    """POST one dialogue; the answer must be a 200 from `version` with a non-empty summary."""
    if not url:
        raise SmokeFailed("its status names no URL to send a request to yet")
    try:
        status, headers, body = post(f"{url}/invocations", {"inputs": [SMOKE_DIALOGUE]}, timeout)
    except (OSError, ValueError) as e:
        raise SmokeFailed(f"no answer from {url}: {e}") from e
    if status != 200:
        raise SmokeFailed(f"{url}/invocations answered HTTP {status}: {body[:300].decode(errors='replace')}")
    served = next((v for k, v in headers.items() if k.lower() == VERSION_HEADER.lower()), None)
    if served != version:
        raise SmokeFailed(f"{url} answered as version {served or 'unknown (no ' + VERSION_HEADER + ' header)'}, "
                          f"not {version}")
    try:
        predictions = json.loads(body).get("predictions")
    except (ValueError, AttributeError):
        predictions = None
    if not (isinstance(predictions, list) and predictions and isinstance(predictions[0], str)
            and predictions[0].strip()):
        raise SmokeFailed(f"{url} answered without a non-empty string prediction: {body[:300]!r}")
    return predictions[0]


def _wait(cfg: MixtuneConfig, io: Io, deadline: float, check: Callable[[dict], str | None]) -> dict:
    """Poll the object until check() finds nothing missing; DeployError (touched) at the deadline."""
    k = cfg.serve.kubernetes
    last = None
    while True:
        try:
            obj = io.api.get_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name)
        except Exception as e:  # an API server restart is ridden out like any other wait
            problem, conditions = f"cannot read it: {api_error(e)}", "unknown"
        else:
            problem, conditions = check(obj), m.failing_conditions(obj)
        if problem is None:
            return obj
        if problem != last:
            io.log(f"InferenceService {k.namespace}/{k.name}: {problem}")
            last = problem
        if io.clock() >= deadline:
            raise DeployError(f"InferenceService {k.namespace}/{k.name} did not come up within "
                              f"{k.ready_timeout_seconds:g} s: {problem} (conditions: {conditions})", touched=True)
        io.sleep(k.poll_seconds)


def rollout(cfg: MixtuneConfig, new: m.Target, io: Io) -> DeployResult:
    """Move the InferenceService to `new` and return once that version serves all traffic."""
    k = cfg.serve.kubernetes
    what = f"InferenceService {k.namespace}/{k.name}"
    io.api = io.api if io.api is not None else default_api()
    start = io.clock()
    try:
        io.api.get_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name)
        exists = True
    except Exception as e:
        if getattr(e, "status", None) != 404:
            raise DeployError(f"cannot read {what}: {api_error(e)}") from e
        exists = False
    canary = k.canary_percent if exists and k.mode == "serverless" else None  # nothing to protect yet
    try:
        if exists:
            obj = io.api.patch_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name,
                                                        m.version_patch(cfg, new, canary))
        else:
            obj = io.api.create_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL,
                                                         m.inference_service(cfg, new))
    except Exception as e:
        raise DeployError(f"could not {'patch' if exists else 'create'} {what}: {api_error(e)}") from e
    io.log(f"{what}: v{new.version} ({new.model_uri})" + (f", {canary}% of the traffic first" if canary else ""))
    generation = (obj.get("metadata") or {}).get("generation") or 0
    deadline, answer = start + k.ready_timeout_seconds, {}

    def serving(obj: dict) -> str | None:
        problem = m.not_ready(obj, generation, k.mode)
        if problem is None:
            url = m.smoke_url(obj, k.mode, io.address(k.smoke_address))
            try:
                answer["prediction"] = smoke_check(io.post, url, new.version, k.smoke_timeout_seconds)
                answer["url"] = url
            except SmokeFailed as e:
                problem = f"Ready, but the smoke request failed: {e}"
        return problem

    obj = _wait(cfg, io, deadline, serving)
    revision = m.latest_revision(obj)
    io.log(f"{what}: v{new.version} answered ({revision or 'pods ready'}): {answer['prediction'][:80]!r}")
    if canary is not None:
        try:
            io.api.patch_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name,
                                                  m.full_traffic_patch())
        except Exception as e:
            raise DeployError(f"could not give v{new.version} all traffic on {what}: {api_error(e)}",
                              touched=True) from e
        obj = _wait(cfg, io, deadline, lambda o: None if m.takes_all_traffic(o, revision)
                    else f"revision {revision} does not have all traffic yet")
    url = (obj.get("status") or {}).get("url") or answer["url"]
    return DeployResult(new.name, new.version, new.model_uri, url, revision, io.clock() - start,
                        prediction=answer["prediction"])


def restore(cfg: MixtuneConfig, previous: m.Target | None, io: Io) -> str:
    """Put the object back to `previous` without waiting; a sentence for the error message."""
    k = cfg.serve.kubernetes
    if previous is None:
        return "nothing to put the InferenceService back to: it is left as it is"
    # Serverless: 0% on the new revision, 100% on the last rolled-out one (the previous version) at once.
    canary = 0 if k.mode == "serverless" else None
    try:
        io.api.patch_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name,
                                              m.version_patch(cfg, previous, canary))
    except Exception as e:
        return f"putting the InferenceService back to v{previous.version} FAILED: {api_error(e)}"
    return f"the InferenceService is back on v{previous.version} ({previous.model_uri})"
