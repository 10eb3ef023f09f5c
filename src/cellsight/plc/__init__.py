"""The PLC link: an OPC UA server a line PLC triggers inspections through (see `opcua_server`)."""

from cellsight.plc.config import PlcConfig
from cellsight.plc.opcua_server import NAMESPACE_URI, PlcServer
from cellsight.plc.result import InspectCallback, PlcResult

__all__ = ["NAMESPACE_URI", "InspectCallback", "PlcConfig", "PlcResult", "PlcServer"]
