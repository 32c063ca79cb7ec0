"""Where a marketplace account sells, as routing hints: the site or region code the marketplace
puts on every message, mapped to the buyer's market (ISO 3166 country) and language.

The marketplace's locale is the language hint (issue 16): every Mercado Libre site but Brazil's
is Spanish (CHANNELS.md §6.1, ``/sites``); Shopee's regions each have their own language. The
hint only seeds classification: a Brazilian buyer who writes in Spanish is still routed by the
text, and the market stays Brazil.
"""

from __future__ import annotations

from typing import Final

import msgspec

from channels.models import ChannelHints


class Market(msgspec.Struct, frozen=True):
    """A marketplace site: its code (``MLB``, ``BR``), the country and the site's language."""

    site: str
    country: str
    language: str


def _table(rows: dict[str, tuple[str, str]]) -> dict[str, Market]:
    return {site: Market(site, country, language) for site, (country, language) in rows.items()}


# Mercado Libre site ids (``GET /sites``).
MERCADOLIBRE_SITES: Final = _table({
    "MLA": ("AR", "es"), "MLB": ("BR", "pt"), "MLM": ("MX", "es"), "MLC": ("CL", "es"),
    "MCO": ("CO", "es"), "MLU": ("UY", "es"), "MPE": ("PE", "es"), "MEC": ("EC", "es"),
    "MLV": ("VE", "es"), "MBO": ("BO", "es"), "MPY": ("PY", "es"), "MCR": ("CR", "es"),
    "MRD": ("DO", "es"), "MPA": ("PA", "es"), "MGT": ("GT", "es"), "MHN": ("HN", "es"),
    "MNI": ("NI", "es"), "MSV": ("SV", "es"), "MCU": ("CU", "es"),
})

# Shopee shop regions (the ``region`` of ``/api/v2/shop/get_shop_info``).
SHOPEE_REGIONS: Final = _table({
    "BR": ("BR", "pt"), "MX": ("MX", "es"), "CO": ("CO", "es"), "CL": ("CL", "es"),
    "AR": ("AR", "es"), "SG": ("SG", "en"), "MY": ("MY", "ms"), "PH": ("PH", "en"),
    "TH": ("TH", "th"), "TW": ("TW", "zh"), "VN": ("VN", "vi"), "ID": ("ID", "id"),
})


def market_hints(market: Market | None, *, label: str, order_id: str | None = None,
                 answer_url: str | None = None) -> ChannelHints:
    """The hints a marketplace message carries: site, market, language, order and SLA label.

    An unknown site keeps the label and order but names no market: a wrong market routes a
    buyer to an agent who does not know it, no market lets the text decide."""
    if market is None:
        return ChannelHints(order_id=order_id, label=label, answer_url=answer_url)
    return ChannelHints(language=market.language, market=market.country,
                        marketplace_site=market.site, order_id=order_id, label=label,
                        answer_url=answer_url)
