// Lint: typescript-eslint's recommended type-checked rules over the product, its tests and the
// benchmark (one type-aware program: tsconfig.test.json includes all three). `npm run lint`; CI runs it
// through scripts/test.sh. Formatting is Prettier's (.prettierrc.json), checked by `npm run lint` too.
import tseslint from 'typescript-eslint';

export default tseslint.config({ ignores: ['dist/**', 'build/**', 'node_modules/**', 'bench/results/**', 'eslint.config.js'] }, ...tseslint.configs.recommendedTypeChecked, {
  languageOptions: { parserOptions: { project: ['./tsconfig.test.json'], tsconfigRootDir: import.meta.dirname } },
  rules: {
    // `_`-prefixed parameters are the way to say "unused on purpose" (callbacks with a fixed shape)
    '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    // node:test's test() and describe() return promises the runner itself awaits
    '@typescript-eslint/no-floating-promises': [
      'error',
      { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
    ],
  },
});
