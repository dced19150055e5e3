"""A throwaway Orthanc PACS for the DICOM node's test and benchmark: Debian's ``orthanc`` (and its DICOMweb
plugin where installed) on free loopback ports, its storage in a temporary folder, a Lua script that forwards
every instance a modality sends to the node (never the node's own results back), stopped at the end.
``start_orthanc`` says why when it cannot start one, and the test skips with that reason."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
FORWARD = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] ~= '{node_aet}' then
    SendToModality(instanceId, 'pneumoscan')
  end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM port and AE title, its REST address, and how to stop it."""

    dicom_port: int
    http_port: int
    ae_title: str
    process: subprocess.Popen
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def file(self, instance: str) -> bytes:
        """An instance's DICOM file."""
        with urllib.request.urlopen(f"{self.url}/instances/{instance}/file", timeout=30) as response:
            return response.read()

    def post(self, path: str, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=data, method="POST"),
                                    timeout=120) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_orthanc(node_port: int, node_aet: str = "PNEUMOSCAN", ae_title: str = "ORTHANC") -> Orthanc:
    """Start Orthanc forwarding what modalities send to the node at ``127.0.0.1:node_port``."""
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None:
        raise RuntimeError("no Orthanc (Debian: apt-get install orthanc orthanc-dicomweb)")
    folder = Path(tempfile.mkdtemp(prefix="pneumoscan-orthanc-"))
    dicom_port, http_port = free_port(), free_port()
    (folder / "forward.lua").write_text(FORWARD.replace("{node_aet}", node_aet))
    config = {
        "Name": "pneumoscan-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ae_title, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpBindAddress": "127.0.0.1", "DicomCheckCalledAet": False,
        "DicomModalities": {"pneumoscan": [node_aet, "127.0.0.1", node_port]}, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True, "LuaScripts": [str(folder / "forward.lua")], "StableAge": 1,
        "DicomScuTimeout": 30, "ConcurrentJobs": 2,
        "SyncStorageArea": False,  # a throwaway PACS on a test machine: no fsync of each stored file
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "w")  # noqa: SIM115 - Orthanc writes it until stopped
    # DCMTK (Orthanc's DICOM stack) sends each PDU at once only with TCP_NODELAY set: 20 ms per C-STORE, not 60
    environment = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                               env=environment)
    orthanc = Orthanc(dicom_port, http_port, ae_title, process, folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (folder / "orthanc.log").read_text()[-800:]
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"Orthanc exited at start: {tail}")
        try:
            orthanc.get("/system")
            return orthanc
        except OSError:
            time.sleep(0.3)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer on its HTTP port within 60 s")
