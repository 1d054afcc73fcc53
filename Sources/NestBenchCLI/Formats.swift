import ArgumentParser
import NestBenchAnalysis
import NestBenchCollectors
import NestBenchModel

/// `--format table|json`: ArgumentParser rejects anything else and lists the choices in `--help`.
enum TableOrJSON: String, CaseIterable, ExpressibleByArgument {
    case table, json
}

/// `--format table|json|csv` (`history`).
enum TableJSONOrCSV: String, CaseIterable, ExpressibleByArgument {
    case table, json, csv
}

/// `--format text|json` (`suites`, `lats`).
enum TextOrJSON: String, CaseIterable, ExpressibleByArgument {
    case text, json
}

extension ReportFormat: ExpressibleByArgument {}
extension FragmentationSpec.Method: ExpressibleByArgument {}
extension PerfScope: ExpressibleByArgument {}
