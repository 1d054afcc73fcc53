import NestBenchCLI

await NestBenchCommand.entry()
