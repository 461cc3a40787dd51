"""The 11 service categories of the Sichuan sci-tech service plan, with their zh/en names."""

from __future__ import annotations

import enum


class ServiceCategory(enum.StrEnum):
    RESEARCH_DEVELOPMENT = "research_development"
    TECH_TRANSFER = "tech_transfer"
    PILOT_SCALE = "pilot_scale"
    INCUBATION = "incubation"
    TECH_PROMOTION = "tech_promotion"
    TESTING = "testing"
    INFORMATION_TECHNOLOGY = "information_technology"
    ENGINEERING = "engineering"
    SCI_TECH_FINANCE = "sci_tech_finance"
    INTELLECTUAL_PROPERTY = "intellectual_property"
    CONSULTING = "consulting"


CATEGORY_NAMES: dict[ServiceCategory, tuple[str, str]] = {
    ServiceCategory.RESEARCH_DEVELOPMENT: ("研究开发", "Research and development"),
    ServiceCategory.TECH_TRANSFER: ("技术转移转化", "Technology transfer"),
    ServiceCategory.PILOT_SCALE: ("概念验证和中试熟化", "Proof of concept and pilot scale-up"),
    ServiceCategory.INCUBATION: ("企业孵化", "Business incubation"),
    ServiceCategory.TECH_PROMOTION: ("技术推广", "Technology promotion"),
    ServiceCategory.TESTING: ("检验检测", "Testing and inspection"),
    ServiceCategory.INFORMATION_TECHNOLOGY: ("信息技术", "Information technology"),
    ServiceCategory.ENGINEERING: ("工程技术", "Engineering"),
    ServiceCategory.SCI_TECH_FINANCE: ("科技金融", "Sci-tech finance"),
    ServiceCategory.INTELLECTUAL_PROPERTY: ("知识产权", "Intellectual property"),
    ServiceCategory.CONSULTING: ("科技咨询", "Sci-tech consulting"),
}
