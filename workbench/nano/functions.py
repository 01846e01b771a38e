"""The function tools the nano model learned to call: a demo weather service and a fixed-rate currency converter.

Both are deterministic plain functions (no network): the weather of a city is derived from its name, the
exchange rates are a fixed demo table. They are real tools to the tool loop: declare them with
``chat(..., tools=NANO_FUNCTIONS)`` and the model's JSON arguments are validated and the function runs.

>>> get_weather("Paris")
{'city': 'Paris', 'temperature_c': 17, 'conditions': 'cloudy'}
>>> convert_currency(100, "EUR", "USD")
{'amount': 100, 'from_currency': 'EUR', 'to_currency': 'USD', 'result': 108.7}
"""

from __future__ import annotations

import zlib
from typing import Literal

CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "foggy", "snowy")
CITIES = ("Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Warsaw", "Lisbon", "Dublin",
          "Oslo", "Stockholm", "Helsinki", "Athens", "Budapest", "Zurich", "Amsterdam", "Brussels", "Tokyo",
          "Seoul", "Beijing", "Delhi", "Cairo", "Nairobi", "Lagos", "Toronto", "Chicago", "Boston", "Denver",
          "Seattle", "Miami", "Lima", "Santiago", "Sydney", "Auckland", "Jakarta", "Manila", "Hanoi", "Dubai",
          "Istanbul")
# units of each currency per euro (a fixed demo table, not market rates)
RATES = {"EUR": 1.0, "USD": 1.087, "GBP": 0.853, "JPY": 162.4, "CHF": 0.961, "CAD": 1.472}
Currency = Literal["EUR", "USD", "GBP", "JPY", "CHF", "CAD"]


def get_weather(city: str) -> dict:
    """Get the current weather in a city (a demo service: the same city always gets the same weather).

    Args:
        city: The city's name, e.g. "Paris".
    """
    h = zlib.crc32(city.strip().lower().encode())
    return {"city": city, "temperature_c": h % 41 - 5, "conditions": CONDITIONS[(h >> 8) % len(CONDITIONS)]}


def convert_currency(amount: float, from_currency: Currency, to_currency: Currency) -> dict:
    """Convert an amount of money between currencies at fixed demo rates.

    Args:
        amount: How much money, in from_currency.
        from_currency: The currency code to convert from.
        to_currency: The currency code to convert to.
    """
    result = round(amount * RATES[to_currency] / RATES[from_currency], 2)
    return {"amount": amount, "from_currency": from_currency, "to_currency": to_currency, "result": result}


NANO_FUNCTIONS = (get_weather, convert_currency)
