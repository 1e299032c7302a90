"""tieout: tie billing out against payment gateways, then post to the ERP and revenue system."""

__version__ = "0.1.0"
