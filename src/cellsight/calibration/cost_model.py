"""What a call costs on the line: the cost-of-quality model read from YAML (a line's `costs:` block).

Money and energy are per cell. `value_added` and `energy_kwh` of a station are what a cell has had put
into it up to and including that station; the end-of-line test has its own, so rejecting a defective
cell early avoids the difference (the scrap value, energy and CO2e it would have taken to find it at the
end). An escape (a defective cell that passes) costs `escape`: a module or pack scrapped at the
end-of-line test, or a field return. A false call (a good cell rejected) costs the station's
`false_call`, by default its `value_added` (the cell is scrapped); a line that re-inspects instead sets
the re-inspection's cost. `review` is one person's look at one flagged cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cellsight.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationCosts(_Strict):
    value_added: float = Field(ge=0)  # currency per cell, cumulative up to and including this station
    energy_kwh: float = Field(ge=0)  # kWh per cell, cumulative up to and including this station
    false_call: float | None = Field(None, ge=0)  # a good cell rejected here; None: value_added (scrapped)
    defect_rate: float | None = Field(None, gt=0, lt=1)  # share of defective cells the station sees

    @property
    def false_call_cost(self) -> float:
        return self.value_added if self.false_call is None else self.false_call


class EndOfLine(_Strict):
    """The end-of-line test (module or pack): where an undetected defect would be found at the latest."""

    value_added: float = Field(ge=0)
    energy_kwh: float = Field(ge=0)


class CostModel(_Strict):
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")  # ISO 4217
    co2e_kg_per_kwh: float = Field(ge=0)  # the grid's (or site's) emission factor
    escape: float = Field(ge=0)
    review: float = Field(0.0, ge=0)
    end_of_line: EndOfLine
    stations: dict[str, StationCosts] = Field(min_length=1)

    @model_validator(mode="after")
    def _before_the_end(self) -> CostModel:
        for name, station in self.stations.items():
            if station.value_added > self.end_of_line.value_added or station.energy_kwh > self.end_of_line.energy_kwh:
                raise ValueError(
                    f"station {name}: value_added and energy_kwh are cumulative and cannot exceed the "
                    f"end_of_line's ({self.end_of_line.value_added}, {self.end_of_line.energy_kwh})"
                )
        return self

    def station(self, name: str, where: str = "the cost model") -> StationCosts:
        try:
            return self.stations[name]
        except KeyError:
            raise ConfigError(
                f"{where}: no costs for station {name!r}; stations: {', '.join(self.stations)}"
            ) from None


@dataclass(frozen=True)
class CostTerms:
    """What the cost-optimal threshold weighs at one station: a false call, an escape, how often defects come."""

    false_call: float
    escape: float
    defect_rate: float

    def to_dict(self) -> dict[str, float]:
        return {"false_call": self.false_call, "escape": self.escape, "defect_rate": self.defect_rate}


def station_terms(
    costs: CostModel, station: str | None, defect_rate: float | None = None, where: str = "the cost model"
) -> tuple[str, CostTerms]:
    """The station's (named, or the only one) terms; `defect_rate` overrides the model's."""
    if station is None:
        if len(costs.stations) != 1:
            raise ConfigError(f"{where}: name the station (--station), one of {', '.join(costs.stations)}")
        station = next(iter(costs.stations))
    chosen = costs.station(station, where)
    rate = defect_rate if defect_rate is not None else chosen.defect_rate
    if rate is None or not 0 < rate < 1:
        raise ConfigError(
            f"{where}: station {station} needs a defect_rate in (0, 1) (the share of defective cells it sees), "
            f"got {rate!r}; set it in the file or with --defect-rate"
        )
    return station, CostTerms(chosen.false_call_cost, costs.escape, rate)


def validation_problems(error: ValidationError) -> str:
    """Every problem as `field.path: message`, joined: the one-line form errors name files with."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or '(top)'}: {item['msg']}" for item in error.errors()
    )


def load_costs(path: Path | str) -> CostModel:
    """A costs YAML file: the cost model itself, or a line configuration holding it under `costs:`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the cost model: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(data, dict) and "stations" in data and "costs" in data:
        data = data["costs"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a cost model is a mapping with escape, end_of_line and stations")
    try:
        return CostModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc
