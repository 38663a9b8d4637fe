"""A remote host's GPUs from `nvidia-smi -q -x` (recorded on an H200), as `%gpus` snapshots."""
import json
import os

from dockmagic.nvml import snapshot_from_record
from dockmagic.remote import nvsmi

HERE = os.path.dirname(os.path.abspath(__file__))
XML = open(os.path.join(HERE, "fixtures", "nvidia-smi-q-h200.xml")).read()


def test_h200_reading_matches_the_nvml_reading_of_the_same_gpu():
    snap = snapshot_from_record(nvsmi.record_from_xml(XML))
    with open(os.path.join(HERE, "fixtures", "nvml-h200.json")) as f:
        nvml_dev = json.load(f)["snapshots"][0]["devices"][0]
    assert snap.error is None and snap.driver == "580.159.04" and snap.cuda_driver == "13.0"
    (gpu,) = snap.gpus
    assert gpu.name == "NVIDIA H200" and gpu.uuid == nvml_dev["uuid"]
    assert gpu.pci_bus_id == nvml_dev["pci_bus_id"]
    assert gpu.mem_total == nvml_dev["memory"]["total"]  # 143771 MiB, to the byte
    assert (gpu.util_gpu, gpu.temperature, gpu.power_mw, gpu.power_limit_mw) == (
        0, 34, 79810, 700000)
    assert gpu.free_memory == 143156 << 20
    assert "NVIDIA H200" in repr(snap)


def test_processes_and_their_cgroups_come_from_one_command_output():
    proc = ("<process_info><pid>4242</pid><type>C</type><process_name>python3</process_name>"
            "<used_memory>2048 MiB</used_memory></process_info>")
    xml = XML.replace("<processes>\n\t\t</processes>", f"<processes>{proc}</processes>")
    cid = "ab" * 32
    out = (xml + "\n--dockmagic-cgroups--\n"
           f"4242\t12:pids:/docker/{cid};11:memory:/docker/{cid};\n")
    record, cgroups = nvsmi.parse_output(out, when=5.0)
    snap = snapshot_from_record(record)
    (p,) = snap.gpus[0].processes
    assert (p.pid, p.used_memory) == (4242, 2048 << 20)
    from dockmagic.gpus import parse_cgroup_container_id
    assert parse_cgroup_container_id(cgroups[4242]) == cid


def test_missing_fields_are_na_not_errors():
    xml = ("<nvidia_smi_log><driver_version>550.1</driver_version><gpu id='0'>"
           "<product_name>X</product_name><fb_memory_usage><total>N/A</total></fb_memory_usage>"
           "</gpu></nvidia_smi_log>")
    gpu = snapshot_from_record(nvsmi.record_from_xml(xml)).gpus[0]
    assert gpu.name == "X" and gpu.mem_total is None and gpu.util_gpu is None
    assert dict(gpu.field_errors)["memory.total"] == "N/A"


def test_unreadable_xml_is_the_no_gpu_state():
    snap = snapshot_from_record(nvsmi.record_from_xml("not xml"))
    assert snap.error and "could not be read" in snap.error
