"""The Slovenian five-block tariff the agents self-optimise against.

Numbers are from ../shared/IDRIJA.md (Energy Agency, network-tariff reform of 1 Oct 2024):
five time blocks in a higher season (Nov–Feb) and a lower season (Mar–Oct), working and
non-working days; a market energy price with a high tariff on working days 06–22; an almost
flat network energy charge; VAT 22 %. Exports earn a flat feed-in price (net metering is
closed for new PV). The block-1 power charge is a monthly peak charge; agents plan a day
at a time, so it is left out of their slot prices (a stated simplification).

Prices are per slot, in EUR/kWh, for the timestamps given (UTC; the tariff's hours are
local time, Europe/Ljubljana).
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Tariff", "tariff_block"]

# Block by local hour, for the four columns of IDRIJA.md's table:
# (higher season, working day), (lower, working), (higher, non-working), (lower, non-working).
_BLOCK_BY_HOUR = np.array(
    [[3, 4, 4, 5]] * 6
    + [[2, 3, 3, 4]]
    + [[1, 2, 2, 3]] * 7
    + [[2, 3, 3, 4]] * 2
    + [[1, 2, 2, 3]] * 4
    + [[2, 3, 3, 4]] * 2
    + [[3, 4, 4, 5]] * 2,
    dtype=np.int8,
)
_HIGHER_SEASON_MONTHS = (11, 12, 1, 2)
_LOCAL_TZ = "Europe/Ljubljana"


def _local(timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(timestamps)
    if index.tz is None:
        raise ValueError("timestamps: must be timezone-aware (UTC), got naive datetimes")
    return index.tz_convert(_LOCAL_TZ)


def _working_day(local: pd.DatetimeIndex) -> np.ndarray:
    """Monday–Friday; public holidays are not modelled (stated simplification)."""
    return np.asarray(local.dayofweek < 5)


def tariff_block(timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> np.ndarray:
    """Tariff block (1 = most expensive … 5 = cheapest) of each UTC timestamp."""
    local = _local(timestamps)
    higher = np.isin(np.asarray(local.month), _HIGHER_SEASON_MONTHS)
    working = _working_day(local)
    column = np.where(higher, 0, 1) + np.where(working, 0, 2)
    return _BLOCK_BY_HOUR[np.asarray(local.hour), column]


class Tariff(BaseModel):
    """A time-of-use retail tariff with a flat export price.

    Defaults are Idrija's (IDRIJA.md, section "Tariff"): energy 0.120 / 0.098 EUR/kWh in high /
    low tariff, network energy charge 0.018–0.020 EUR/kWh (block 1 dearest), VAT 22 %, exports
    0.07 EUR/kWh (middle of the 0.05–0.09 range, an estimate).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    energy_high_eur_per_kwh: float = Field(0.120, ge=0, allow_inf_nan=False)
    energy_low_eur_per_kwh: float = Field(0.098, ge=0, allow_inf_nan=False)
    network_eur_per_kwh_by_block: tuple[float, float, float, float, float] = (
        0.020,
        0.0195,
        0.019,
        0.0185,
        0.018,
    )
    vat: float = Field(0.22, ge=0, le=1, allow_inf_nan=False)
    export_eur_per_kwh: float = Field(0.07, ge=0, allow_inf_nan=False)

    def import_price(self, timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> np.ndarray:
        """Retail price of imported energy per slot, EUR/kWh incl. VAT."""
        local = _local(timestamps)
        hour = np.asarray(local.hour)
        high = _working_day(local) & (hour >= 6) & (hour < 22)
        energy = np.where(high, self.energy_high_eur_per_kwh, self.energy_low_eur_per_kwh)
        network = np.asarray(self.network_eur_per_kwh_by_block)[tariff_block(timestamps) - 1]
        return (energy + network) * (1.0 + self.vat)

    def export_price(self, timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> np.ndarray:
        """Price earned for exported energy per slot, EUR/kWh."""
        return np.full(len(pd.DatetimeIndex(timestamps)), self.export_eur_per_kwh)
