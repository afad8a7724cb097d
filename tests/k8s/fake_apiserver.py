"""A stand-in for the Kubernetes API server, enough for kubectl's client side: discovery
(/api, /apis, one resource list per group version) for the kinds kvstore ships, 404 for every
object GET (nothing exists yet), and a record of PATCH requests. Over HTTP for kubectl, or over
HTTPS with a given certificate for the pod's own label requests. Runs on a thread; one per test.
"""
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# group/version -> [(plural, Kind, namespaced)]
RESOURCES = {
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True),
           ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
           ("secrets", "Secret", True), ("pods", "Pod", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("statefulsets", "StatefulSet", True)],
    "batch/v1": [("cronjobs", "CronJob", True), ("jobs", "Job", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
}


class FakeApiServer:
    def __init__(self, certfile=None, keyfile=None, patch_status=200):
        self.patches = []  # (path, headers dict, body bytes)
        self.patch_status = patch_status
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    groups = [{"name": gv.split("/")[0],
                               "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                               "preferredVersion": {"groupVersion": gv,
                                                    "version": gv.split("/")[1]}}
                              for gv in RESOURCES if "/" in gv]
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                            "groups": groups})
                for prefix in ("/api/", "/apis/"):
                    gv = path[len(prefix):] if path.startswith(prefix) else None
                    if gv in RESOURCES:
                        return self._send(200, {
                            "kind": "APIResourceList", "groupVersion": gv,
                            "resources": [{"name": n, "singularName": "", "namespaced": ns,
                                           "kind": k, "verbs": ["create", "get", "list",
                                                                "patch", "update", "delete"]}
                                          for n, k, ns in RESOURCES[gv]]})
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404})

            def do_PATCH(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                owner.patches.append((self.path, dict(self.headers), body))
                self._send(owner.patch_status, {"kind": "Pod", "apiVersion": "v1"})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
