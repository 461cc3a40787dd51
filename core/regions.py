"""The 21 prefecture-level divisions (市州) of Sichuan with their GB/T 2260 codes and names in zh and en.

Organisations and facilities record the 市州 they are in by code; pages and reports show the name in
the reader's language.
"""

from __future__ import annotations

from typing import Final

#: code -> (name_zh, name_en), in the order of the codes.
SICHUAN_CITIES: Final[dict[str, tuple[str, str]]] = {
    "510100": ("成都市", "Chengdu"),
    "510300": ("自贡市", "Zigong"),
    "510400": ("攀枝花市", "Panzhihua"),
    "510500": ("泸州市", "Luzhou"),
    "510600": ("德阳市", "Deyang"),
    "510700": ("绵阳市", "Mianyang"),
    "510800": ("广元市", "Guangyuan"),
    "510900": ("遂宁市", "Suining"),
    "511000": ("内江市", "Neijiang"),
    "511100": ("乐山市", "Leshan"),
    "511300": ("南充市", "Nanchong"),
    "511400": ("眉山市", "Meishan"),
    "511500": ("宜宾市", "Yibin"),
    "511600": ("广安市", "Guang'an"),
    "511700": ("达州市", "Dazhou"),
    "511800": ("雅安市", "Ya'an"),
    "511900": ("巴中市", "Bazhong"),
    "512000": ("资阳市", "Ziyang"),
    "513200": ("阿坝藏族羌族自治州", "Ngawa Tibetan and Qiang Autonomous Prefecture"),
    "513300": ("甘孜藏族自治州", "Garzê Tibetan Autonomous Prefecture"),
    "513400": ("凉山彝族自治州", "Liangshan Yi Autonomous Prefecture"),
}
