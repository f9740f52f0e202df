// volantd entry point: being built (issue "volantd and volar").
console.error('volantd: not implemented yet');
process.exitCode = 1;
