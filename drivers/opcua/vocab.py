"""The OPC UA driver's vocabularies, light to import (no asyncua): the config models
(``drivers/opcua/config.py``) and the probe take their allowed values from here, the
driver (``driver.py``) maps them onto asyncua's."""

PASSWORD_ENV = "PRESS_COLLECTOR_OPCUA_PASSWORD"  # + "_<PRESS_ID>" for one press
POLICIES = ("None", "Basic256Sha256")
MODES = ("None", "Sign", "SignAndEncrypt")
DEADBANDS = {"none": 0, "absolute": 1, "percent": 2}  # name -> OPC UA DeadbandType
TAG_MODES = ("subscribe", "poll")
